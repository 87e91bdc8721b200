"""Depth maps and masks on disk for the training data: .npy (float32) or 16-bit PNG, each with a JSON sidecar.

Depth: `STEM.npy` (float32 [H, W]) or `STEM.png` (uint16, value = depth * depth_scale, 0 = invalid), and
`STEM.json` with at least {"format": "npy"|"png16", "depth_scale": float, "kind": "metric"|"relative",
"height": H, "width": W}. The JSON is written last (atomically), so its presence marks a finished file:
jobs that are killed leave no JSON and are redone on the next run.
Masks: `STEM.png` (uint8, 255 = hole / unknown, 0 = known) + `STEM.json`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from splat.errors import StitchError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
MAX_PIXELS = 64_000_000  # refuse absurd image sizes before allocating


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise StitchError(f"image folder {folder} does not exist; give a folder of JPEG/PNG images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not files:
        raise StitchError(f"no images ({', '.join(IMAGE_EXTS)}) in {folder}")
    return files


def read_rgb(path: str | Path) -> np.ndarray:  # -> [H, W, 3] float32 in [0, 1]
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise StitchError(f"cannot read image {path}; is it a JPEG/PNG file?")
    if img.shape[0] * img.shape[1] > MAX_PIXELS:
        raise StitchError(f"image {path} is {img.shape[1]}x{img.shape[0]}, too large; resize it first")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json(path: Path, obj: dict) -> None:
    _atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise StitchError(f"cannot read {path} ({exc}); delete it and re-run the data preparation") from exc


def is_done(out_dir: Path, stem: str) -> bool:
    """A finished item has its JSON sidecar (written last)."""
    return (Path(out_dir) / f"{stem}.json").is_file()


def write_depth(out_dir: Path, stem: str, depth: np.ndarray, meta: dict, fmt: str = "npy") -> None:
    """depth [H, W] float (0 = invalid) -> STEM.npy|png + STEM.json (JSON last)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    depth = np.nan_to_num(np.asarray(depth, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    depth = np.maximum(depth, 0.0)
    if fmt == "npy":
        tmp = out_dir / f".{stem}.npy.tmp{os.getpid()}.npy"
        np.save(tmp, depth)
        os.replace(tmp, out_dir / f"{stem}.npy")
        scale = 1.0
    elif fmt == "png16":
        # metres as millimetres when they fit in 16 bits, otherwise the largest value at full scale
        dmax = float(depth.max()) if depth.size else 0.0
        scale = 1000.0 if dmax * 1000.0 <= 65535 else 65535.0 / max(dmax, 1e-12)
        q = np.clip(np.round(depth * scale), 0, 65535).astype(np.uint16)
        ok, buf = cv2.imencode(".png", q)
        if not ok:
            raise StitchError(f"cannot encode {stem} as 16-bit PNG")
        _atomic_write_bytes(out_dir / f"{stem}.png", buf.tobytes())
    else:
        raise StitchError(f"unknown depth format {fmt!r}; use npy or png16")
    full = {**meta, "format": fmt, "depth_scale": scale, "height": depth.shape[0], "width": depth.shape[1]}
    write_json(out_dir / f"{stem}.json", full)


def read_depth(depth_dir: Path, stem: str) -> tuple[np.ndarray, dict]:
    """-> depth [H, W] float32 (0 = invalid), metadata."""
    depth_dir = Path(depth_dir)
    meta = read_json(depth_dir / f"{stem}.json")
    if meta.get("format") == "npy":
        depth = np.load(depth_dir / f"{stem}.npy", allow_pickle=False).astype(np.float32)
    elif meta.get("format") == "png16":
        q = cv2.imread(str(depth_dir / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        if q is None or q.dtype != np.uint16:
            raise StitchError(f"{depth_dir / stem}.png is not a 16-bit PNG; re-run the teacher")
        depth = q.astype(np.float32) / float(meta["depth_scale"])
    else:
        raise StitchError(f"{depth_dir / stem}.json has unknown format {meta.get('format')!r}")
    if depth.ndim != 2:
        raise StitchError(f"depth {depth_dir / stem} must be [H, W], got {depth.shape}")
    return depth, meta


def write_mask(out_dir: Path, stem: str, hole: np.ndarray, meta: dict) -> None:
    """hole [H, W] bool (True = unknown, to be completed) -> STEM.png (255 = hole) + STEM.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", np.where(hole, 255, 0).astype(np.uint8))
    if not ok:
        raise StitchError(f"cannot encode mask {stem}")
    _atomic_write_bytes(out_dir / f"{stem}.png", buf.tobytes())
    meta = {
        **meta,
        "height": int(hole.shape[0]),
        "width": int(hole.shape[1]),
        "hole_fraction": float(hole.mean()),
    }
    write_json(out_dir / f"{stem}.json", meta)


def read_mask(mask_dir: Path, stem: str) -> np.ndarray:  # -> [H, W] bool, True = hole
    m = cv2.imread(str(Path(mask_dir) / f"{stem}.png"), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise StitchError(f"cannot read mask {Path(mask_dir) / stem}.png; re-run `stitch train masks`")
    return m > 127


def finished_stems(folder: Path) -> list[str]:
    """Stems with a JSON sidecar (finished items), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StitchError(f"{folder} does not exist; run the data preparation step that writes it first")
    return sorted(p.stem for p in folder.glob("*.json") if not p.name.startswith("."))
