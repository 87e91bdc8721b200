"""CPU renderer speed: forward+backward for 20k Gaussians at 256x256 on 2 threads, against a reference.

The reference, measured in the same run, is the straightforward pure-PyTorch way to do the same job:
gsplat's pure-PyTorch projection and SH (`gsplat/cuda/_torch_impl.py`) and a 16x16-tile compositor that,
per tile, evaluates every overlapping Gaussian at every tile pixel in one tensor and composites with a
cumulative product, with autograd for the backward pass. Also reports forward-only 512x512 frames/s.

    .venv/bin/python benchmarks/bench_render.py [--repeats 5] [--no-record]

Appends a dated row per figure to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from splat.gaussians import Gaussians
from splat.render import render

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = (
    "| date | machine | benchmark | figure | reference | ratio |\n| --- | --- | --- | --- | --- | --- |\n"
)


def plane_scene(n: int = 20_000, seed: int = 0) -> Gaussians:
    """A seeded point cloud on a back wall, a floor and two boxes' faces, seen by the identity camera."""
    rng = np.random.default_rng(seed)
    parts = []
    m = n // 4
    parts.append(np.c_[rng.uniform(-3, 3, m), rng.uniform(-3, 3, m), np.full(m, 5.0)])  # wall
    parts.append(np.c_[rng.uniform(-3, 3, m), np.full(m, 1.2), rng.uniform(1.5, 5.0, m)])  # floor
    parts.append(np.c_[rng.uniform(-1.5, -0.3, m), rng.uniform(-0.8, 1.2, m), np.full(m, 3.0)])  # box 1
    k = n - 3 * m
    parts.append(np.c_[rng.uniform(0.2, 1.4, k), rng.uniform(-0.2, 1.2, k), np.full(k, 2.2)])  # box 2
    points = np.concatenate(parts) + rng.normal(0, 0.01, (n, 3))
    colours = rng.uniform(0, 1, (n, 3))
    g = Gaussians.from_points(points, colours, sh_degree=3, opacity=0.8)
    with torch.no_grad():
        g.params["scales"] += torch.from_numpy(rng.normal(0, 0.3, (n, 3))).float()  # anisotropy
        g.params["quats"].copy_(torch.from_numpy(rng.normal(0, 1, (n, 4))).float())
        g.params["opacities"] += torch.from_numpy(rng.normal(0, 1.0, n)).float()
        g.params["shN"].copy_(torch.from_numpy(rng.normal(0, 0.1, g.params["shN"].shape)).float())
    return g


def camera(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    K = torch.tensor([[size * 1.0, 0, size / 2], [0, size * 1.0, size / 2], [0, 0, 1]])[None]
    return torch.eye(4)[None], K


# --- reference: the straightforward pure-PyTorch tile compositor ------------------------------------------
def reference_render(g: Gaussians, viewmats, Ks, width: int, height: int, tile: int = 16):
    from gsplat.cuda._torch_impl import (
        _fully_fused_projection,
        _quat_scale_to_covar_preci,
        _spherical_harmonics,
    )

    p = g.params
    opac = torch.sigmoid(p["opacities"])
    covars, _ = _quat_scale_to_covar_preci(p["quats"], torch.exp(p["scales"]), compute_preci=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        p["means"], covars, viewmats, Ks, width, height
    )
    campos = torch.linalg.inv(viewmats)[:, :3, 3]
    coeffs = torch.cat([p["sh0"], p["shN"]], dim=1)
    rgb = _spherical_harmonics(3, p["means"][None] - campos[:, None], coeffs[None])
    colors = torch.cat([torch.clamp_min(rgb + 0.5, 0.0), depths[..., None]], dim=-1)[0]  # [N, 4]
    means2d, conics, depths, radii = means2d[0], conics[0], depths[0], radii[0]

    order = torch.argsort(depths.detach())
    r = radii[order].float()
    m = means2d.detach()[order]
    vis = (radii[order] > 0).all(-1)
    out = torch.zeros(height, width, 4)
    acc = torch.zeros(height, width)
    for ty in range(0, height, tile):
        for tx in range(0, width, tile):
            hit = vis & (m[:, 0] + r[:, 0] > tx) & (m[:, 0] - r[:, 0] < tx + tile)
            hit &= (m[:, 1] + r[:, 1] > ty) & (m[:, 1] - r[:, 1] < ty + tile)
            ids = order[hit]
            if len(ids) == 0:
                continue
            ys, xs = torch.meshgrid(
                torch.arange(ty, min(ty + tile, height)) + 0.5,
                torch.arange(tx, min(tx + tile, width)) + 0.5,
                indexing="ij",
            )
            dx = means2d[ids, 0, None] - xs.reshape(1, -1)  # [K, P]
            dy = means2d[ids, 1, None] - ys.reshape(1, -1)
            a, b, c = conics[ids].unbind(-1)
            sigma = 0.5 * (a[:, None] * dx * dx + c[:, None] * dy * dy) + b[:, None] * dx * dy
            alpha = torch.clamp_max(opac[ids, None] * torch.exp(-sigma), 0.999)
            alpha = torch.where((sigma >= 0) & (alpha >= 1 / 255), alpha, 0.0)
            T = torch.cumprod(torch.cat([torch.ones_like(alpha[:1]), 1 - alpha[:-1]]), dim=0)
            w = torch.where(T > 1e-4, alpha * T, 0.0)  # [K, P]
            col = w.T @ colors[ids]  # [P, 4]
            out[ty : ty + tile, tx : tx + tile] = col.reshape(*xs.shape, 4)
            acc[ty : ty + tile, tx : tx + tile] = w.sum(0).reshape(xs.shape)
    return out[..., :3], out[..., 3:] / acc[..., None].clamp_min(1e-10), acc[..., None]


def fwd_bwd(fn, g: Gaussians) -> None:
    for p in g.params.values():
        p.grad = None
    rgb, depth, alpha = fn()
    (rgb.sum() + 0.1 * depth.sum() + alpha.sum()).backward()


def forward_only(fn) -> None:
    with torch.no_grad():
        fn()


def timed(fn, repeats: int, threads: int) -> tuple[float, float]:
    """Median wall time and median process CPU time (s) of fn() over `repeats` runs, after a warm-up run
    (numba loads its compiled kernels from the on-disk cache on first use), on `threads` torch threads.
    CPU time is the steadier figure on a shared machine: it does not count time spent waiting for a core."""
    torch.set_num_threads(threads)
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--ref-threads", type=int, default=1,
        help="threads for the reference (1: on a shared 2-core machine torch's OpenMP barriers stall "
        "whenever another process holds a core, which made the 2-thread reference 8-30x slower)",
    )  # fmt: skip
    ap.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = ap.parse_args()
    nt, rt = args.threads, args.ref_threads

    g = plane_scene()
    vm, K = camera(256)
    vm5, K5 = camera(512)

    def ours(vm=vm, K=K, size=256):
        o = render(g, vm, K, size, size)
        return o.rgb, o.depth, o.alpha

    def ref(vm=vm, K=K, size=256):
        rgb, depth, alpha = reference_render(g, vm, K, size, size)
        return rgb[None], depth[None], alpha[None]

    with torch.no_grad():
        a, b = ours(), ref()
        diff = (a[0] - b[0]).abs().mean().item()
        coverage = (a[2] > 0.5).float().mean().item()
        n_vis = int((render(g, vm, K, 256, 256).meta["radii"] > 0).all(-1).sum())

    ours_w, _ = timed(lambda: fwd_bwd(ours, g), args.repeats, nt)
    ours1_w, ours1_c = timed(lambda: fwd_bwd(ours, g), args.repeats, 1)
    ref_w, ref_c = timed(lambda: fwd_bwd(ref, g), max(1, args.repeats // 2), rt)
    frame_w, _ = timed(lambda: forward_only(lambda: ours(vm5, K5, 512)), args.repeats, nt)
    _, frame1_c = timed(lambda: forward_only(lambda: ours(vm5, K5, 512)), args.repeats, 1)
    ref_frame_w, ref_frame_c = timed(lambda: forward_only(lambda: ref(vm5, K5, 512)), 1, rt)
    ratio, ratio_cpu = ref_w / ours_w, ref_c / ours1_c

    ms = lambda t: f"{t * 1e3:.0f} ms"  # noqa: E731
    print(
        f"scene: 20k Gaussians ({n_vis} in view), coverage {coverage:.0%}, mean |ours - reference| {diff:.1e}"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(
        f"fwd+bwd 256x256: ours {ms(ours_w)} wall on {nt} threads, "
        f"{ms(ours1_w)} wall / {ms(ours1_c)} CPU on 1; reference {ms(ref_w)} wall / {ms(ref_c)} CPU on {rt}"
    )
    print(f"ratio: {ratio:.1f}x wall ({nt} vs {rt} threads), {ratio_cpu:.1f}x CPU time (1 vs {rt})")
    print(
        f"forward-only 512x512: ours {ms(frame_w)} = {1 / frame_w:.1f} fps on {nt} threads "
        f"({ms(frame1_c)} CPU on 1 = {1 / frame1_c:.1f} fps); reference {ms(ref_frame_w)} wall / "
        f"{ms(ref_frame_c)} CPU ({ref_frame_c / frame1_c:.0f}x CPU time)"
    )

    if not args.no_record:
        machine = f"{platform.machine()}, {os.cpu_count()} shared cores (load {os.getloadavg()[0]:.1f})"
        day = datetime.date.today().isoformat()
        rows = [
            f"| {day} | {machine} | CPU render fwd+bwd, 20k Gaussians, 256x256 | {ms(ours_w)} wall on "
            f"{nt} threads; {ms(ours1_c)} CPU on 1 | pure-torch tiles: {ms(ref_w)} wall / {ms(ref_c)} CPU "
            f"on {rt} | {ratio:.1f}x wall, {ratio_cpu:.1f}x CPU |",
            f"| {day} | {machine} | CPU render forward, 20k Gaussians, 512x512 | {1 / frame_w:.1f} fps on "
            f"{nt} threads; {ms(frame1_c)} CPU on 1 | pure-torch tiles: {ms(ref_frame_c)} CPU on {rt} | "
            f"{ref_frame_c / frame1_c:.0f}x CPU |",
        ]
        new = not RESULTS.exists()
        with RESULTS.open("a") as f:
            if new:
                f.write("# Benchmark results\n\n" + HEADER)
            f.write("\n".join(rows) + "\n")
        print(f"recorded in {RESULTS}")
    assert math.isfinite(ratio)


if __name__ == "__main__":
    main()
