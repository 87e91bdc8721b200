"""Optimisation speed: refinement steps per second at a given resolution and Gaussian count, with references.

The scene looks like a generated one: one Gaussian per pixel of a 'stage' view (wall, floor and two boxes at
their depths) plus the pixels a second camera, 25 degrees to the side, adds. Each step: draw a view, render,
0.8 L1 + 0.2 D-SSIM on trusted pixels + log-depth L1 + needle penalty, backward, Adam, densify/prune
(BudgetStrategy every 10 steps, budget 1.25x), means-lr decay, SH degree schedule.

References measured in the same run:
1. plain step: the same render + L1/D-SSIM + backward + Adam on every Gaussian at full SH degree, without
   view culling, strategy, depth or regularisers (what `optimize` did before refinement existed);
2. at a small size (64x48, 1500 Gaussians): a dense pure-PyTorch step (every Gaussian evaluated at every
   pixel as one [N, P] tensor, composited with a cumulative product, autograd backward) against the
   refinement step on the same scene and views.
CPU times are per-process CPU seconds (steady on a shared machine); wall times are also printed.

    .venv/bin/python benchmarks/bench_optimize.py [--width 384 --height 256] [--steps 30] [--no-record]
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.trajectory import yaw_cameras
from splat.cameras import Camera, project_points, unproject_depth
from splat.gaussians import Gaussians
from splat.learning_rates import LearningRates, Schedule, make_optimizers
from splat.losses import photometric_loss
from splat.optimize import Trainer
from splat.projection import project
from splat.regularize import Regularization
from splat.render import render_camera
from splat.strategy import make_strategy
from splat.train_views import TrainView

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = (
    "| date | machine | benchmark | figure | reference | ratio |\n| --- | --- | --- | --- | --- | --- |\n"
)


def stage_depth(width: int, height: int) -> np.ndarray:
    """z-depth [H, W] of a back wall at 5 m, a floor and two boxes, seen by the identity camera."""
    cam = yaw_cameras([0.0], width, height)[0]
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    ry = (v - cam.K[1, 2]) / cam.K[1, 1]
    rx = (u - cam.K[0, 2]) / cam.K[0, 0]
    depth = np.full((height, width), 5.0)
    floor = ry > 0.24
    depth[floor] = np.minimum(5.0, 1.2 / ry[floor])
    box1 = (rx > -0.45) & (rx < -0.1) & (ry > -0.25) & (ry < 0.35)
    box2 = (rx > 0.1) & (rx < 0.5) & (ry > -0.05) & (ry < 0.5)
    depth[box1], depth[box2] = 3.0, 2.2
    return depth.astype(np.float32)


def texture(points: np.ndarray, seed: int) -> np.ndarray:
    """A smooth-plus-detail colour per world point [M, 3] -> [M, 3] in [0, 1]."""
    rng = np.random.default_rng(seed)
    freqs = rng.normal(0, 4, (6, 3))
    phase = rng.uniform(0, 6.3, 6)
    s = np.sin(points @ freqs.T + phase)  # [M, 6]
    return np.clip(0.5 + 0.25 * s[:, :3] + 0.15 * s[:, 3:], 0, 1)


def generated_scene(width: int, height: int, n_max: int | None, seed: int = 0):
    """(Gaussians, train views) of a two-view 'generated' scene; at most n_max Gaussians (subsampled)."""
    cams = yaw_cameras([0.0, 25.0], width, height)
    depth0 = stage_depth(width, height)
    pts0 = unproject_depth(cams[0], depth0)
    # The second view: pixels the first does not cover get their own points on a wall at 5 m.
    uv, z = project_points(cams[1], pts0)
    seen = np.zeros((height, width), bool)
    ok = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    seen[uv[ok, 1].astype(int), uv[ok, 0].astype(int)] = True
    new1 = ~seen
    pts1 = unproject_depth(cams[1], np.full((height, width), 5.0, np.float32), new1)
    points = np.concatenate([pts0, pts1])
    if n_max is not None and len(points) > n_max:
        points = points[np.random.default_rng(seed).choice(len(points), n_max, replace=False)]
    g = Gaussians.from_points(points, texture(points, seed), sh_degree=3, scale_factor=0.5)
    views = []
    truth = Gaussians.from_points(points, texture(points, seed + 1), sh_degree=0, scale_factor=0.4)
    for cam, mask in zip(cams, [np.ones((height, width), bool), new1], strict=True):
        with torch.no_grad():
            out = render_camera(truth, cam)
        views.append(
            TrainView(cam, out.rgb[0].clamp(0, 1), torch.from_numpy(mask), out.depth[0, ..., 0].clone())
        )
    return g, views


def refine_trainer(g: Gaussians, views, steps: int) -> Trainer:
    strategy = make_strategy("cpu", device="cpu", steps=10 * steps, n_initial=len(g))
    strategy.refine_start_iter, strategy.refine_every = 0, 10
    return Trainer(
        g, views, steps, lrs=LearningRates(sh0=1e-2, opacities=5e-2, shN=5e-4), strategy=strategy,
        schedule=Schedule(0.01, max(1, steps // 4)),
        regularization=Regularization(depth_weight=0.05, scale_ratio_weight=0.01),
    )  # fmt: skip


def plain_step(g: Gaussians, views, optimizers, rng) -> None:
    view = views[int(rng.integers(len(views)))]
    out = render_camera(g, view.camera)
    loss = photometric_loss(out.rgb[0], view.image, view.mask, 0.2)
    for opt in optimizers.values():
        opt.zero_grad(set_to_none=True)
    loss.backward()
    for opt in optimizers.values():
        opt.step()


def dense_torch_render(g: Gaussians, cam: Camera) -> torch.Tensor:
    """Every Gaussian at every pixel as one [N, P] tensor; front-to-back cumulative product. -> [H, W, 3]"""
    p = g.params
    W, H = cam.width, cam.height
    vm = torch.as_tensor(cam.world_to_camera, dtype=torch.float32)[None]
    K = torch.as_tensor(cam.K, dtype=torch.float32)[None]
    opac = torch.sigmoid(p["opacities"])
    proj = project(p["means"], p["quats"], torch.exp(p["scales"]), vm, K, W, H, opacities=opac)
    order = torch.argsort(proj.depths[0].detach())
    rgb = torch.clamp_min(0.28209479177387814 * p["sh0"][:, 0] + 0.5, 0.0)[order]
    m, con, op = proj.means2d[0][order], proj.conics[0][order], opac[order]
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    dx = m[:, 0, None] - xs.reshape(1, -1)
    dy = m[:, 1, None] - ys.reshape(1, -1)
    a, b, c = con.unbind(-1)
    sigma = 0.5 * (a[:, None] * dx * dx + c[:, None] * dy * dy) + b[:, None] * dx * dy
    alpha = torch.clamp_max(op[:, None] * torch.exp(-sigma), 0.999)
    alpha = torch.where((sigma >= 0) & (alpha >= 1 / 255), alpha, 0.0)
    T = torch.cumprod(torch.cat([torch.ones_like(alpha[:1]), 1 - alpha[:-1]]), dim=0)
    w = torch.where(T > 1e-4, alpha * T, 0.0)
    return (w.T @ rgb).reshape(H, W, 3)


def dense_step(g: Gaussians, views, optimizers, rng) -> None:
    view = views[int(rng.integers(len(views)))]
    loss = photometric_loss(dense_torch_render(g, view.camera), view.image, view.mask, 0.2)
    for opt in optimizers.values():
        opt.zero_grad(set_to_none=True)
    loss.backward()
    for opt in optimizers.values():
        opt.step()


def timed(fn, steps: int, warmup: int = 2) -> tuple[float, float]:
    """(wall seconds, CPU seconds) per call of fn() over `steps` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    w, c = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - w) / steps, (time.process_time() - c) / steps


def cuda_rows(width: int, height: int, n_max: int | None, steps: int) -> list[str]:
    """Refinement steps/s on CUDA with gsplat's DefaultStrategy (empty without CUDA)."""
    if not torch.cuda.is_available():
        return []
    g, views = generated_scene(width, height, n_max)
    g = Gaussians({k: v.cuda() for k, v in g.tensors().items()})
    views = [TrainView(v.camera, v.image.cuda(), v.mask.cuda(), v.depth.cuda()) for v in views]
    n = len(g)
    trainer = Trainer(
        g, views, steps, strategy=make_strategy("default", device="cuda", steps=10 * steps, n_initial=n),
        regularization=Regularization(depth_weight=0.05, scale_ratio_weight=0.01),
    )  # fmt: skip

    def step():
        trainer.train_step()
        torch.cuda.synchronize()

    wall, _ = timed(step, steps)
    print(f"CUDA ({torch.cuda.get_device_name()}): {1 / wall:.1f} steps/s, {n} Gaussians, {width}x{height}")
    return [f"CUDA refine step ({torch.cuda.get_device_name()}), {n // 1000}k Gaussians, {width}x{height} | "
            f"{1 / wall:.1f} steps/s | - | - |"]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=384)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--gaussians", type=int, default=None, help="at most this many (default: all seeded)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument(
        "--threads", type=int, default=1,
        help="torch threads (1: on a shared 2-core machine two threads stall on OpenMP barriers)",
    )  # fmt: skip
    ap.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    W, H, steps = args.width, args.height, args.steps

    g, views = generated_scene(W, H, args.gaussians)
    n = len(g)
    trainer = refine_trainer(g, views, steps)
    ours_w, ours_c = timed(trainer.train_step, steps)
    grown = trainer.strategy_state["n_grown"]
    g2, views2 = generated_scene(W, H, args.gaussians)
    opts2, rng = make_optimizers(g2, LearningRates(), 1.0), np.random.default_rng(0)
    _, plain_c = timed(lambda: plain_step(g2, views2, opts2, rng), max(5, steps // 3))

    gs, vs = generated_scene(64, 48, 1500)
    small = refine_trainer(gs, vs, steps)
    _, small_c = timed(small.train_step, steps)
    gd, vd = generated_scene(64, 48, 1500)
    optsd = make_optimizers(gd, LearningRates(), 1.0)
    _, dense_c = timed(lambda: dense_step(gd, vd, optsd, rng), max(3, steps // 6), warmup=1)

    load = os.getloadavg()[0]
    print(f"scene: {n} Gaussians at {W}x{H} (2 views), +{grown} grown while timing; {args.threads} thread(s)")
    print(f"load average at the end: {load:.1f} on {os.cpu_count()} cores")
    print(
        f"refine step: {1 / ours_c:.2f} steps/s CPU time ({ours_c * 1e3:.0f} ms CPU, "
        f"{ours_w * 1e3:.0f} ms wall); plain step: {1 / plain_c:.2f} steps/s ({plain_c * 1e3:.0f} ms CPU)"
        f" -> {plain_c / ours_c:.2f}x"
    )
    print(
        f"64x48, 1500 Gaussians: refine step {small_c * 1e3:.1f} ms CPU; dense pure-torch step "
        f"{dense_c * 1e3:.0f} ms CPU -> {dense_c / small_c:.1f}x"
    )
    rows = [
        f"CPU refine step, {n // 1000}k Gaussians, {W}x{H}, {args.threads} thread | {1 / ours_c:.2f} steps/s "
        f"({ours_c * 1e3:.0f} ms CPU, {ours_w * 1e3:.0f} ms wall) | plain step (no culling/strategy): "
        f"{plain_c * 1e3:.0f} ms CPU | {plain_c / ours_c:.2f}x",
        f"CPU refine step, 1.5k Gaussians, 64x48, {args.threads} thread | {small_c * 1e3:.1f} ms CPU | "
        f"dense pure-torch step: {dense_c * 1e3:.0f} ms CPU | {dense_c / small_c:.1f}x",
        *cuda_rows(W, H, args.gaussians, steps),
    ]
    if not args.no_record:
        machine = f"{platform.machine()}, {os.cpu_count()} shared cores (load {load:.1f})"
        day = datetime.date.today().isoformat()
        new = not RESULTS.exists()
        with RESULTS.open("a") as f:
            if new:
                f.write("# Benchmark results\n\n" + HEADER)
            f.write("".join(f"| {day} | {machine} | {row} |\n" for row in rows))
        print(f"recorded in {RESULTS}")
    assert math.isfinite(ours_c)


if __name__ == "__main__":
    main()
