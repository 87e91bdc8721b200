"""Generate every photo in ../shared/data/photos in stage and 360 mode, score each run with the outcome
harness (engine/outcome.py) and draw a contact sheet of the views: what a person gets, side by side.

    python benchmarks/outcome_sheet.py --max-side 128 --outpainter classical --sheet docs/outcome_sheet.png
    python benchmarks/outcome_sheet.py --max-side 128 --outpainter mirror --sheet /tmp/mirror_sheet.png

Prints one row per run (worst luminance ratio, worst seam, max repetition, min detail, verdict) and the mean
seam / repetition of the run set, the figures quoted in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from engine.config import GenerateConfig, OptimConfig
from engine.run import run_generate

PHOTOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "photos"


def summarise(outcome: dict) -> dict:
    rows = [r for r in outcome["views"] if r["luminance_ratio"] is not None]

    def pick(key, fn):
        vals = [r[key] for r in rows if r[key] is not None]
        return round(fn(vals), 3) if vals else None

    return {
        "lum_min": pick("luminance_ratio", min),
        "lum_max": pick("luminance_ratio", max),
        "seam_max": pick("seam_colour", max),
        "seam_mean": pick("seam_colour", np.mean),
        "repetition_max": pick("repetition", max),
        "repetition_mean": pick("repetition", np.mean),
        "detail_min": pick("detail", min),
        "depth_ratio_max": pick("depth_ratio", max),
        "holes_max": max(outcome["holes_between_views"], default=0.0),
        "verdict": outcome["verdict"],
    }


def sheet_row(run: Path, label: str, tiles: int, tile_h: int) -> np.ndarray:
    views = sorted((run / "views").glob("view_*.png"))
    idx = np.linspace(0, len(views) - 1, min(tiles, len(views))).round().astype(int)
    ims = []
    for i in idx:
        im = Image.open(views[i]).convert("RGB")
        im = im.resize((round(im.width * tile_h / im.height), tile_h))
        ims.append(np.asarray(im))
    row = np.concatenate(ims, axis=1)
    canvas = Image.fromarray(row)
    ImageDraw.Draw(canvas).text((4, 2), label, fill=(255, 255, 0))
    return np.asarray(canvas)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-side", type=int, default=128)
    ap.add_argument("--outpainter", default="classical")
    ap.add_argument("--modes", default="stage,360")
    ap.add_argument("--steps", type=int, default=-1, help="optimisation steps per view (-1: the preset's)")
    ap.add_argument("--out", type=Path, default=Path("out/outcome"))
    ap.add_argument("--sheet", type=Path, default=Path("docs/outcome_sheet.png"))
    ap.add_argument("--photos", type=Path, default=PHOTOS)
    args = ap.parse_args()
    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    rows, summary = [], []
    for mode in args.modes.split(","):
        for photo in photos:
            run = args.out / args.outpainter / mode / photo.stem
            manifest = run / "manifest.json"
            if not (manifest.is_file() and json.loads(manifest.read_text()).get("status") == "finished"):
                optim = OptimConfig() if args.steps < 0 else OptimConfig(steps_per_view=args.steps)
                config = GenerateConfig(photo=photo, mode=mode, max_side=args.max_side, optim=optim)
                config = dataclasses.replace(config, outpainter=args.outpainter)
                run.mkdir(parents=True, exist_ok=True)
                run_generate(config, run_dir=run / "run", output=run / "run" / "scene.ply", quiet=True)
                (run / "manifest.json").write_text((run / "run" / "manifest.json").read_text())
            outcome = json.loads(manifest.read_text())["outcome"]
            s = summarise(outcome) | {"photo": photo.stem[:22], "mode": mode}
            summary.append(s)
            print(json.dumps(s), flush=True)
            rows.append(sheet_row(run / "run", f"{mode} {photo.stem[:18]}", 7, 96))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0))) for r in rows]
    args.sheet.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.sheet)
    for key in ("seam_mean", "repetition_mean", "repetition_max", "lum_min", "lum_max", "detail_min"):
        vals = [s[key] for s in summary if s[key] is not None]
        print(f"{args.outpainter}: mean {key} over runs = {np.mean(vals):.3f}")
    print(f"sheet: {args.sheet}")


if __name__ == "__main__":
    main()
