"""Speed of the classical depth completer at the pipeline's size (512x384), one core.

Input: a real redkitchen frame resized to 512x384 with the right 35 % of the image unknown (what a 25-degree
yaw leaves to outpaint) plus its Kinect holes. Reference measured in the same run: plain nearest fill
(scipy's Euclidean distance transform), the cheapest honest completion. CPU time (process time) is the figure,
since the machine is shared; wall time is printed beside it.

    .venv/bin/python benchmarks/bench_depth_classical.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from engine.backends.depth_classical import ClassicalDepthCompleter, NearestFillCompleter
from engine.bench.rgbd import load_rgbd_sequence

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rgbd" / "redkitchen_dev"


def _case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    frame = load_rgbd_sequence(DATA).load(0)
    image = cv2.resize(frame.image, (512, 384), interpolation=cv2.INTER_AREA)
    depth = cv2.resize(frame.depth, (512, 384), interpolation=cv2.INTER_NEAREST)
    mask = depth > 0
    mask[:, int(512 * 0.65) :] = False
    return image, np.where(mask, depth, 0).astype(np.float32), mask


def _time(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up (numba loads its cached kernel)
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return float(np.median(cpu)), float(np.median(wall))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    image, known, mask = _case()
    ours = ClassicalDepthCompleter()
    ref = NearestFillCompleter()
    cpu, wall = _time(lambda: ours(image, known, mask), args.repeats)
    rcpu, rwall = _time(lambda: ref(image, known, mask), args.repeats)
    print(f"machine: {platform.machine()}, load {os.getloadavg()[0]:.1f}")
    print(f"classical ({ours.method}) 512x384, {100 * (~mask).mean():.0f}% unknown: "
          f"{1000 * cpu:.0f} ms CPU ({1000 * wall:.0f} ms wall)")  # fmt: skip
    print(f"reference nearest fill: {1000 * rcpu:.0f} ms CPU ({1000 * rwall:.0f} ms wall)")
    print(f"ratio (classical / nearest, CPU): {cpu / rcpu:.1f}x")


if __name__ == "__main__":
    main()
