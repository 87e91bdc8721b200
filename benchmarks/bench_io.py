"""Scene-file speed and size: save/load times and file sizes for .ply, .splat and .spz.

Reference, measured in the same run on the same .ply: `plyfile.PlyData.read` (its default memory-mapped
path) plus stacking the columns into one float32 array, i.e. the usual way Python 3DGS tools read these
files. (plyfile with mmap=False is pathologically slow, ~40 s for 200k Gaussians; we do not compare to it.)

    .venv/bin/python benchmarks/bench_io.py [--n 200000] [--degree 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import plyfile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from splat.formats.io import load_scene, save_scene
from splat.gaussians import Gaussians


def scene(n: int, degree: int) -> Gaussians:
    """Clustered, smooth-ish values, closer to a trained scene than white noise (affects gzip)."""
    g = torch.Generator().manual_seed(0)
    k = (degree + 1) ** 2 - 1
    centres = torch.randn(64, 3, generator=g) * 3.0
    means = centres[torch.randint(0, 64, (n,), generator=g)] + torch.randn(n, 3, generator=g) * 0.3
    return Gaussians(
        {
            "means": means,
            "scales": torch.randn(n, 3, generator=g) * 0.5 - 4.0,
            "quats": torch.randn(n, 4, generator=g),
            "opacities": torch.randn(n, generator=g) * 2.0,
            "sh0": torch.randn(n, 1, 3, generator=g) * 0.8,
            "shN": torch.randn(n, k, 3, generator=g) * 0.05,
        }
    )


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) if repeats < 3 else statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--degree", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    g = scene(args.n, args.degree)
    with tempfile.TemporaryDirectory() as d:
        rows = []
        for suffix in (".ply", ".splat", ".spz"):
            path = Path(d) / f"scene{suffix}"
            t_save = best_of(args.repeats, lambda p=path: save_scene(g, p))
            t_load = best_of(args.repeats, lambda p=path: load_scene(p))
            rows.append((suffix, t_save, t_load, path.stat().st_size))

        def plyfile_read() -> np.ndarray:
            v = plyfile.PlyData.read(str(Path(d) / "scene.ply"))["vertex"].data
            return np.stack([v[name] for name in v.dtype.names], axis=1)

        t_ref = best_of(args.repeats, plyfile_read)
    print(f"{args.n} Gaussians, SH degree {args.degree}, 1 thread")
    print(f"{'format':8} {'save s':>8} {'load s':>8} {'MB':>8}")
    for suffix, t_save, t_load, size in rows:
        print(f"{suffix:8} {t_save:8.3f} {t_load:8.3f} {size / 1e6:8.2f}")
    t_ply = rows[0][2]
    print(f"reference plyfile read+stack: {t_ref:.3f} s; load_scene(.ply) is {t_ref / t_ply:.2f}x its speed")


if __name__ == "__main__":
    main()
