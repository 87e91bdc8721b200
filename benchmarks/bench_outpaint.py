"""The offline outpainters side by side on every photo in ../shared/data/photos: the exemplar synthesis
(`classical`, the default) against the earlier reflection method (`mirror`).

For each photo and each side (left / right 45 % of the frame missing: what a 25 degree turn uncovers) it
prints the outcome harness's repetition (mirrored or tiled copy of the known pixels; lower is better), seam
(colour step across the boundary in units of a natural photo column; lower is better) and detail (fine
texture vs the photo's; 1 = as sharp as the photo), then the mean of each and the time per view at 384x256
of both methods (the ratio is the speed figure). Writes a side-by-side image with --image.

    python benchmarks/bench_outpaint.py --width 192 --image docs/outpaint_side_by_side.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from engine.backends.outpaint_classical import ClassicalOutpainter, MirrorOutpainter
from engine.outcome import (
    _fine_texture,
    detail_ratio,
    photo_seam_baseline,
    repetition_score,
    seam_colour_step,
)

PHOTOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "photos"


def load(path: Path, width: int) -> np.ndarray:
    img = cv2.imread(str(path))[..., ::-1].astype(np.float32) / 255.0
    h, w = img.shape[:2]
    return cv2.resize(img, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)


def hole_for(shape: tuple[int, int], side: str) -> np.ndarray:
    hole = np.zeros(shape, bool)
    w = shape[1]
    if side == "left":
        hole[:, : int(w * 0.45)] = True
    else:
        hole[:, int(w * 0.55) :] = True
    return hole


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--image", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    methods = [ClassicalOutpainter(), MirrorOutpainter()]
    scores: dict[str, list] = {m.name: [] for m in methods}
    tiles = []
    photos = sorted(PHOTOS.glob("*.jpeg"))
    print(f"{'photo':<14} {'side':<5} " + " ".join(f"{m.name + ' rep/seam/detail':>28}" for m in methods))
    for photo in photos:
        img = load(photo, args.width)
        base, d0 = photo_seam_baseline(img), float(_fine_texture(img)[0].std())
        for side in ("left", "right"):
            hole = hole_for(img.shape[:2], side)
            known = np.where(hole[..., None], 0.0, img).astype(np.float32)
            cells, row = [], [img]
            for m in methods:
                out = m(known, hole, "", 0)
                s = (
                    repetition_score(out, hole),
                    seam_colour_step(out, hole) / base,
                    detail_ratio(out, hole, d0),
                )
                scores[m.name].append(s)
                cells.append(f"{s[0]:8.2f} {s[1]:8.2f} {s[2]:9.2f}")
                row.append(out)
            print(f"{photo.stem[6:19]:<14} {side:<5} " + " ".join(f"{c:>28}" for c in cells))
            if side == "right":
                tiles.append(np.concatenate(row, axis=1))
    for m in methods:
        mean = np.mean(scores[m.name], axis=0)
        print(f"{m.name:>9}: mean repetition {mean[0]:.3f}  seam {mean[1]:.3f}  detail {mean[2]:.3f}")
    wins = [(a[0] < b[0], a[1] < b[1]) for a, b in zip(scores["classical"], scores["mirror"], strict=True)]
    print(
        f"classical beats mirror: repetition {sum(w[0] for w in wins)}/{len(wins)} cases, "
        f"seam {sum(w[1] for w in wins)}/{len(wins)} cases"
    )
    # Time per view at 384x256 with 45 % missing (the default generation size), one thread.
    img = load(photos[-1], 384)[:256]
    hole = hole_for(img.shape[:2], "right")
    known = np.where(hole[..., None], 0.0, img).astype(np.float32)
    times = {}
    for m in methods:
        m(known, hole, "", 0)  # compile / warm up
        t0 = time.perf_counter()
        for i in range(args.repeats):
            m(known, hole, "", i)
        times[m.name] = (time.perf_counter() - t0) / args.repeats
    print(
        f"time per 384x256 view: classical {times['classical'] * 1000:.0f} ms, mirror "
        f"{times['mirror'] * 1000:.0f} ms (ratio {times['classical'] / times['mirror']:.1f}x)"
    )
    if args.image is not None:
        sheet = np.concatenate(tiles, axis=0)
        args.image.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(args.image), (np.clip(sheet, 0, 1)[..., ::-1] * 255).astype(np.uint8))
        print(f"image (photo | classical | mirror, right 45 % filled): {args.image}")


if __name__ == "__main__":
    main()
