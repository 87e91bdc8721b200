"""The batch contact sheet: every row's preview in one PNG, labelled; failed rows show their error."""

from __future__ import annotations

import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

TILE_W, IMAGE_H, LABEL_H, PAD = 480, 200, 40, 8
COLUMNS = 3


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def _fit(img: Image.Image) -> Image.Image:
    """Scale to fit TILE_W x IMAGE_H, centred on black."""
    img = img.convert("RGB")
    scale = min(TILE_W / img.width, IMAGE_H / img.height)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)
    tile = Image.new("RGB", (TILE_W, IMAGE_H), (0, 0, 0))
    tile.paste(img, ((TILE_W - img.width) // 2, (IMAGE_H - img.height) // 2))
    return tile


def save_contact_sheet(rows: list[dict], path: Path) -> Path:
    """rows: batch index rows (row, name, status, wall_seconds, n_gaussians, verdict, preview, error)."""
    n = max(1, len(rows))
    cols = min(COLUMNS, n)
    n_rows = (n + cols - 1) // cols
    cell_h = IMAGE_H + LABEL_H
    sheet = Image.new("RGB", (cols * TILE_W + (cols + 1) * PAD, n_rows * cell_h + (n_rows + 1) * PAD),
                      (32, 32, 32))  # fmt: skip
    draw = ImageDraw.Draw(sheet)
    big, small = _font(15), _font(12)
    for k, r in enumerate(rows):
        x = PAD + (k % cols) * (TILE_W + PAD)
        y = PAD + (k // cols) * (cell_h + PAD)
        ok = r["status"] == "finished"
        tile = None
        if ok and r.get("preview"):
            try:
                with Image.open(r["preview"]) as im:
                    tile = _fit(im)
            except OSError:
                tile = None
        if tile is None:
            tile = Image.new("RGB", (TILE_W, IMAGE_H), (70, 20, 20) if not ok else (50, 50, 50))
            td = ImageDraw.Draw(tile)
            td.text((12, 10), r["status"].upper(), fill=(255, 110, 110), font=big)
            message = r.get("error") or "no preview"
            for i, line in enumerate(textwrap.wrap(message, 62)[:8]):
                td.text((12, 36 + 18 * i), line, fill=(235, 235, 235), font=small)
        sheet.paste(tile, (x, y + LABEL_H))
        wall = r.get("wall_seconds")
        facts = [r["status"]]
        if wall not in (None, ""):
            facts.append(f"{float(wall):.0f} s")
        if r.get("n_gaussians"):
            facts.append(f"{int(r['n_gaussians']):,} Gaussians")
        if r.get("verdict"):
            facts.append(f"verdict {r['verdict']}")
        colour = (220, 220, 220) if ok else (255, 110, 110)
        draw.text((x + 2, y + 2), f"#{r['row']} {r['name']}"[:58], fill=(255, 255, 255), font=big)
        draw.text((x + 2, y + 21), " | ".join(facts), fill=colour, font=small)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
