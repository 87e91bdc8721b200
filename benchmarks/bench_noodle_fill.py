"""Noodle refill: the release's layered max of the 8 neighbours vs Euclidean nearest, on real depth.

For each real depth frame (7-Scenes redkitchen_dev, ICL-NUIM livingroom), the noodle mask of
`remove_depth_noodles` (depth-edge pixels grown by the valid-mask erosion) is refilled by both methods and
compared with the sensor depth there: MAE (m), and how many pixels the two fills set differently.
Which is closer to the real surface at the edge pixels is the question; both are valid-neighbour values.

    .venv/bin/python benchmarks/bench_noodle_fill.py [DATA_ROOT]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.fusion import nearest_fill, remove_depth_noodles


def frames(root: Path) -> list[tuple[str, np.ndarray]]:
    out = []
    for p in sorted((root / "redkitchen_dev").glob("*.depth.png")):
        d = np.asarray(Image.open(p), np.float64)
        d[d >= 65535] = 0
        out.append((f"7scenes/{p.name}", d / 1000.0))
    for p in sorted((root / "icl_livingroom_5" / "depth").glob("*.png")):
        out.append((f"icl/{p.name}", np.asarray(Image.open(p), np.float64) / 5000.0))
    return out


def main(root: Path) -> None:
    rows = []
    for name, gt in frames(root):
        valid_gt = gt > 0
        # The pipeline sees complete depth: fill sensor holes first (the same for both methods).

        depth = nearest_fill(gt, valid_gt).astype(np.float32)
        a, invalid = remove_depth_noodles(depth, fill="release")
        b, _ = remove_depth_noodles(depth, fill="nearest")
        score = invalid & valid_gt
        if not score.any():
            continue
        rows.append(
            (
                name,
                int(score.sum()),
                int((a != b)[score].sum()),
                float(np.abs(a - gt)[score].mean()),
                float(np.abs(b - gt)[score].mean()),
                float(np.abs(a - b)[score & (a != b)].mean()) if (a != b)[score].any() else 0.0,
            )
        )
    print("| frame | refilled px | differ | MAE release max (m) | MAE nearest (m) | mean |diff| (m) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.4f} | {r[4]:.4f} | {r[5]:.4f} |")
    n = np.array([r[1] for r in rows], float)
    ma = np.array([r[3] for r in rows])
    mb = np.array([r[4] for r in rows])
    print(
        f"\nall {len(rows)} frames, pixel-weighted MAE: release max {np.average(ma, weights=n):.4f} m, "
        f"nearest {np.average(mb, weights=n):.4f} m; release better on {(ma < mb).sum()} frames"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared/data/rgbd")
