"""Differentiable tile rasterizer for CPUs: front-to-back alpha compositing of projected 2D Gaussians.

The compositing rule is gsplat 1.5.3's, so CPU and CUDA images agree:
- pixel (x, y) is sampled at its centre (x + 0.5, y + 0.5);
- alpha = min(0.999, opacity * exp(-sigma)), sigma = 0.5 (a dx^2 + c dy^2) + b dx dy with conic (a, b, c);
- a Gaussian with sigma < 0 or alpha < 1/255 is skipped;
- a pixel stops (excluding the Gaussian that would do it) once its transmittance would drop to <= 1e-4;
- colour = sum_i c_i alpha_i T_i + T_final * background, returned alpha = 1 - T_final.

How it is fast (each step chosen by measurement, see benchmarks/bench_render.py):
- Gaussians are binned into 16x16 tiles in depth order: one stable sort per camera, then a counting fill,
  so every tile's list comes out sorted. Tiles are independent: torch.get_num_threads() Python threads run
  them through nogil numba kernels (see _run_tiles for why not numba's own parallel=True).
- Within a tile, a Gaussian is composited onto whole 16-pixel rows at once (only the rows its ellipse
  reaches, skipping rows that are already saturated), written without branches so LLVM turns each row
  into SIMD instructions, the way a GPU warp runs a tile. exp() is computed with arithmetic only (exponent
  bits + a degree-7 polynomial, relative error < 1e-7) because a libm call would stop vectorisation.
- The backward pass walks each tile back to front, recovering the transmittance by division
  (T_i = T_{i+1} / (1 - alpha_i)) as gsplat does, accumulates per-lane partial sums, and writes one
  gradient row per (tile, Gaussian) intersection; rows are summed per Gaussian afterwards, so threads never
  write to the same memory.
- No image-sized torch op runs on the way: rasterize_rgbd() (what render() uses) splits colour, expected
  depth and alpha inside numba, and buffers are numpy's, because on a shared machine torch's OpenMP pool
  stalls for a scheduler time slice on a good fraction of large ops.
Kernels are generic over float32/float64 and composite 4 channels at a time (RGB + depth in render());
numba caches the compiled machine code on disk after the first call (compiling takes ~10-20 s per dtype).
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch
from torch import Tensor

TILE = 16  # tile side in pixels; a tile row is one SIMD-friendly 16-lane loop
CHANNELS = 4  # the kernels composite this many channels at once; rasterize() splits or pads to it

_FAST = {"contract", "nsz", "arcp", "afn", "reassoc"}  # no nnan/ninf: masks below rely on NaN compares
_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
_vjit = numba.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")

# 2^f on [0, 1): Chebyshev fit of degree 7 (relative error 5.6e-11 in float64, < 1e-7 in float32).
_EXP2_POLY = (
    0.9999999999438559, 0.6931471877102505, 0.24022635776944545, 0.05550529197915104,
    0.009613535728324879, 0.0013429810764820297, 0.00014299400872360777, 2.165172542013508e-05,
)  # fmt: skip


def _constants(dtype: np.dtype) -> np.ndarray:
    """Kernel constants in the kernel's float type (a float64 literal would turn float32 maths into float64):
    half, alpha threshold, alpha clamp, transmittance stop, one, zero, -log2(e), lowest exponent, poly."""
    return np.array(
        [0.5, 1.0 / 255.0, 0.999, 1e-4, 1.0, 0.0, -1.4426950408889634, -126.0, *_EXP2_POLY], dtype
    )


# --------------------------------------------------------------------------------------------------------
# binning
# --------------------------------------------------------------------------------------------------------
@_jit
def _tile_rects(means2d, radii, tiles_x, tiles_y):
    """Per camera and Gaussian, the tile range [tx0, tx1) x [ty0, ty1) its bounding box touches."""
    C, N = radii.shape[0], radii.shape[1]
    rects = np.zeros((C, N, 4), np.int64)
    for c in range(C):
        for g in range(N):
            rx = radii[c, g, 0]
            ry = radii[c, g, 1]
            if rx <= 0 or ry <= 0:
                continue
            mx = means2d[c, g, 0] / TILE
            my = means2d[c, g, 1] / TILE
            rects[c, g, 0] = min(max(0, math.floor(mx - rx / TILE)), tiles_x)
            rects[c, g, 1] = min(max(0, math.ceil(mx + rx / TILE)), tiles_x)
            rects[c, g, 2] = min(max(0, math.floor(my - ry / TILE)), tiles_y)
            rects[c, g, 3] = min(max(0, math.ceil(my + ry / TILE)), tiles_y)
    return rects


@_jit
def _bin(rects, order, tiles_x, tiles_y):
    """Tile lists in depth order: offsets [C*T+1] into ids [M] (Gaussian index within its camera)."""
    C, N = rects.shape[0], rects.shape[1]
    T = tiles_x * tiles_y
    offsets = np.zeros(C * T + 1, np.int64)
    for c in range(C):
        for g in range(N):
            for ty in range(rects[c, g, 2], rects[c, g, 3]):
                for tx in range(rects[c, g, 0], rects[c, g, 1]):
                    offsets[c * T + ty * tiles_x + tx + 1] += 1
    for i in range(C * T):
        offsets[i + 1] += offsets[i]
    fill = offsets[:-1].copy()
    ids = np.empty(offsets[-1], np.int32)
    for c in range(C):
        for i in range(N):
            g = order[c, i]
            for ty in range(rects[c, g, 2], rects[c, g, 3]):
                for tx in range(rects[c, g, 0], rects[c, g, 1]):
                    j = c * T + ty * tiles_x + tx
                    ids[fill[j]] = g
                    fill[j] += 1
    return offsets, ids


# --------------------------------------------------------------------------------------------------------
# shared per-pixel maths (inlined; forward and backward must round identically)
# --------------------------------------------------------------------------------------------------------
@_jit
def _exp_consts(k):
    """The exp constants as a tuple: values held in registers, not loads that might alias the tile state
    (with loads from `k` inside the pixel loop LLVM gives up vectorising the backward pass: 5x slower)."""
    return (k[6], k[7], k[8], k[9], k[10], k[11], k[12], k[13], k[14], k[15])


@_vjit
def _exp_neg(s, e):
    """exp(-s) with arithmetic only: 2^y = 2^floor(y) (exponent bits) * 2^frac(y) (polynomial);
    e = _exp_consts(k)."""
    y = max(s * e[0], e[1])
    n = np.floor(y)  # np.floor keeps the float type; math.floor's int64 result blocks vectorisation
    f = y - n
    p = e[9]
    p = p * f + e[8]
    p = p * f + e[7]
    p = p * f + e[6]
    p = p * f + e[5]
    p = p * f + e[4]
    p = p * f + e[3]
    p = p * f + e[2]
    return p * np.int32((np.int32(n) + 127) << 23).view(np.float32)


@_vjit
def _sigma(dx, dy, ca, cb, cc, half):
    return half * (ca * dx * dx + cc * dy * dy) + cb * dx * dy


@_jit
def _tile_of(job, tiles_x, H, W):
    tiles = tiles_x * ((H + TILE - 1) // TILE)
    c = job // tiles
    t = job % tiles
    x0 = (t % tiles_x) * TILE
    y0 = (t // tiles_x) * TILE
    return c, x0, y0, min(x0 + TILE, W), min(y0 + TILE, H)


@_jit
def _row_hits(mx, dy, ca, cb, cc, smax, x0):
    """Whether this tile row meets the Gaussian's ellipse sigma <= smax (its chord on the row, one pixel of
    slack each side, overlaps the tile's 16 pixels). Skipping rows that miss saves ~10%."""
    bdy = cb * dy
    disc = bdy * bdy - ca * (cc * dy * dy - 2.0 * smax)
    if disc < 0.0:
        return False
    r = math.sqrt(disc)
    # pixel centre x0 + i + 0.5 is inside for dx = mx - (x0 + i + 0.5) in [(-bdy - r) / ca, (-bdy + r) / ca]
    lo = mx - x0 - 0.5 - (r - bdy) / ca
    hi = mx - x0 - 0.5 + (r + bdy) / ca
    return hi >= -1.0 and lo <= TILE


@_jit
def _sigma_max(o, thresh):
    """Beyond this sigma a Gaussian of opacity o has alpha < thresh (plus a margin for rounding)."""
    return math.log(max(float(o), 1e-30) / float(thresh)) + 1e-3


@_jit
def _row_range(my, ry, y0, y1):
    """Tile rows (relative to y0) that the Gaussian's bounding box can reach, one row of slack each side."""
    return max(y0, math.floor(my - ry) - 1) - y0, min(y1, math.ceil(my + ry) + 1) - y0


# --------------------------------------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------------------------------------
@_vjit
def _fwd_tile(job, tiles_x, means2d, conics, colors, opac, radii, bg, offsets, ids, pxs, pys, k,
              out_col, out_T, out_last):  # fmt: skip
    half, thresh, amax, tstop, one, zero = k[0], k[1], k[2], k[3], k[4], k[5]
    e = _exp_consts(k)
    dt = colors.dtype
    c, x0, y0, x1, y1 = _tile_of(job, tiles_x, out_col.shape[1], out_col.shape[2])
    n = TILE * TILE
    trans = np.full(n, one)
    a0 = np.zeros(n, dt)
    a1 = np.zeros(n, dt)
    a2 = np.zeros(n, dt)
    a3 = np.zeros(n, dt)
    last = np.full(n, -1, np.int32)
    live = np.zeros(n, dt)  # 1 while a pixel still composites; 0 once saturated or outside the image
    row_live = np.zeros(TILE, np.int64)
    px = np.empty(TILE, dt)
    for i in range(TILE):
        px[i] = pxs[min(x0 + i, out_col.shape[2] - 1)]
    for r in range(y1 - y0):
        for i in range(x1 - x0):
            live[r * TILE + i] = one
        row_live[r] = x1 - x0
    n_live = (y1 - y0) * (x1 - x0)
    for kk in range(offsets[job], offsets[job + 1]):
        if n_live == 0:
            break  # every pixel of the tile is saturated
        g = ids[kk]
        mx, my = means2d[c, g, 0], means2d[c, g, 1]
        ca, cb, cc = conics[c, g, 0], conics[c, g, 1], conics[c, g, 2]
        o = opac[c, g]
        c0, c1, c2, c3 = colors[c, g, 0], colors[c, g, 1], colors[c, g, 2], colors[c, g, 3]
        k32 = np.int32(kk)
        smax = _sigma_max(o, thresh)
        r0, r1 = _row_range(my, radii[c, g, 1], y0, y1)
        for r in range(r0, r1):
            if row_live[r] == 0:
                continue
            dy = my - pys[y0 + r]
            if not _row_hits(float(mx), float(dy), float(ca), float(cb), float(cc), smax, x0):
                continue
            base = r * TILE
            stops = 0
            for i in range(TILE):
                p = np.uint64(base + i)  # unsigned: no negative-index check, so the loop vectorises
                dx = mx - px[i]
                sigma = _sigma(dx, dy, ca, cb, cc, half)
                alpha = min(amax, o * _exp_neg(sigma, e))
                tp = trans[p]
                nt = tp * (one - alpha)
                ok = (live[p] > zero) & (sigma >= zero) & (alpha >= thresh)
                stop = ok & (nt <= tstop)
                use = ok & (nt > tstop)
                w = alpha * tp if use else zero
                a0[p] += w * c0
                a1[p] += w * c1
                a2[p] += w * c2
                a3[p] += w * c3
                trans[p] = nt if use else tp
                last[p] = k32 if use else last[p]
                live[p] = zero if stop else live[p]
                stops += 1 if stop else 0
            row_live[r] -= stops
            n_live -= stops
    for r in range(y1 - y0):
        for i in range(x1 - x0):
            p = r * TILE + i
            y, x = y0 + r, x0 + i
            out_col[c, y, x, 0] = a0[p] + trans[p] * bg[c, 0]
            out_col[c, y, x, 1] = a1[p] + trans[p] * bg[c, 1]
            out_col[c, y, x, 2] = a2[p] + trans[p] * bg[c, 2]
            out_col[c, y, x, 3] = a3[p] + trans[p] * bg[c, 3]
            out_T[c, y, x] = trans[p]
            out_last[c, y, x] = last[p]


@_jit
def _fwd(jobs, tiles_x, means2d, conics, colors, opac, radii, bg, offsets, ids, pxs, pys, k,
         out_col, out_T, out_last):  # fmt: skip
    for job in jobs:
        _fwd_tile(job, tiles_x, means2d, conics, colors, opac, radii, bg, offsets, ids, pxs, pys, k,
                  out_col, out_T, out_last)  # fmt: skip


# --------------------------------------------------------------------------------------------------------
# backward
# --------------------------------------------------------------------------------------------------------
N_GRAD = 12  # per intersection: d/d(mean x, mean y, conic a, b, c, opacity), |d/dx|, |d/dy|, colour 0..3


@_vjit
def _bwd_tile(job, tiles_x, means2d, conics, colors, opac, radii, bg, offsets, ids, pxs, pys, k,
              out_T, out_last, v_col, v_alpha, grads):  # fmt: skip
    half, thresh, amax, one, zero = k[0], k[1], k[2], k[4], k[5]
    e = _exp_consts(k)
    dt = colors.dtype
    c, x0, y0, x1, y1 = _tile_of(job, tiles_x, v_col.shape[1], v_col.shape[2])
    n = TILE * TILE
    start = offsets[job]
    trans = np.ones(n, dt)
    vab = np.zeros(n, dt)  # T_final * (dL/dalpha - background . dL/dcolour)
    v0 = np.zeros(n, dt)
    v1 = np.zeros(n, dt)
    v2 = np.zeros(n, dt)
    v3 = np.zeros(n, dt)
    s0 = np.zeros(n, dt)  # colour composited behind the current Gaussian
    s1 = np.zeros(n, dt)
    s2 = np.zeros(n, dt)
    s3 = np.zeros(n, dt)
    last = np.full(n, -1, np.int32)
    row_last = np.full(TILE, -1, np.int64)
    px = np.empty(TILE, dt)
    for i in range(TILE):
        px[i] = pxs[min(x0 + i, v_col.shape[2] - 1)]
    for r in range(y1 - y0):
        for i in range(x1 - x0):
            p = r * TILE + i
            y, x = y0 + r, x0 + i
            trans[p] = out_T[c, y, x]
            last[p] = out_last[c, y, x]
            row_last[r] = max(row_last[r], out_last[c, y, x])
            v0[p] = v_col[c, y, x, 0]
            v1[p] = v_col[c, y, x, 1]
            v2[p] = v_col[c, y, x, 2]
            v3[p] = v_col[c, y, x, 3]
            bgdot = bg[c, 0] * v0[p] + bg[c, 1] * v1[p] + bg[c, 2] * v2[p] + bg[c, 3] * v3[p]
            vab[p] = trans[p] * (v_alpha[c, y, x] - bgdot)
    kmax = start - 1
    for r in range(TILE):
        kmax = max(kmax, row_last[r])
    lanes = np.zeros((N_GRAD, TILE), dt)  # per-lane partial sums, reduced once per Gaussian
    for kk in range(kmax, start - 1, -1):
        g = ids[kk]
        mx, my = means2d[c, g, 0], means2d[c, g, 1]
        ca, cb, cc = conics[c, g, 0], conics[c, g, 1], conics[c, g, 2]
        o = opac[c, g]
        c0, c1, c2, c3 = colors[c, g, 0], colors[c, g, 1], colors[c, g, 2], colors[c, g, 3]
        k32 = np.int32(kk)
        lanes[:] = zero
        smax = _sigma_max(o, thresh)
        r0, r1 = _row_range(my, radii[c, g, 1], y0, y1)
        for r in range(r0, r1):
            if kk > row_last[r]:
                continue  # the Gaussian lies behind where every pixel of this row stopped
            dy = my - pys[y0 + r]
            if not _row_hits(float(mx), float(dy), float(ca), float(cb), float(cc), smax, x0):
                continue
            base = r * TILE
            for i in range(TILE):
                p = np.uint64(base + i)
                dx = mx - px[i]
                sigma = _sigma(dx, dy, ca, cb, cc, half)
                vis = _exp_neg(sigma, e)
                raw = o * vis
                alpha = min(amax, raw)
                ok = (k32 <= last[p]) & (sigma >= zero) & (alpha >= thresh)
                ra = one / (one - alpha)
                tp = trans[p] * ra  # transmittance in front of this Gaussian
                w = alpha * tp
                v_a = (
                    vab[p] * ra
                    + (c0 * tp - s0[p] * ra) * v0[p]
                    + (c1 * tp - s1[p] * ra) * v1[p]
                    + (c2 * tp - s2[p] * ra) * v2[p]
                    + (c3 * tp - s3[p] * ra) * v3[p]
                )
                trans[p] = tp if ok else trans[p]
                w = w if ok else zero
                s0[p] += c0 * w
                s1[p] += c1 * w
                s2[p] += c2 * w
                s3[p] += c3 * w
                lanes[8, i] += w * v0[p]
                lanes[9, i] += w * v1[p]
                lanes[10, i] += w * v2[p]
                lanes[11, i] += w * v3[p]
                unclamped = ok & (raw <= amax)  # the 0.999 clamp has zero gradient
                v_sig = -raw * v_a if unclamped else zero
                gx = v_sig * (ca * dx + cb * dy)
                gy = v_sig * (cb * dx + cc * dy)
                lanes[0, i] += gx
                lanes[1, i] += gy
                lanes[2, i] += half * dx * dx * v_sig
                lanes[3, i] += dx * dy * v_sig
                lanes[4, i] += half * dy * dy * v_sig
                lanes[5, i] += vis * v_a if unclamped else zero
                lanes[6, i] += abs(gx)
                lanes[7, i] += abs(gy)
        for j in range(N_GRAD):
            acc = zero
            for i in range(TILE):
                acc += lanes[j, i]
            grads[kk, j] = acc


@_jit
def _bwd(jobs, tiles_x, means2d, conics, colors, opac, radii, bg, offsets, ids, pxs, pys, k,
         out_T, out_last, v_col, v_alpha, grads):  # fmt: skip
    for job in jobs:
        _bwd_tile(job, tiles_x, means2d, conics, colors, opac, radii, bg, offsets, ids, pxs, pys, k,
                  out_T, out_last, v_col, v_alpha, grads)  # fmt: skip


@_jit
def _scatter(grads, offsets, ids, n_cams, n_tiles, out):
    """Sum per-intersection rows into per-(camera, Gaussian) rows: out [C, N, K] += grads [M, K]."""
    K = grads.shape[1]
    for c in range(n_cams):
        for kk in range(offsets[c * n_tiles], offsets[(c + 1) * n_tiles]):
            g = ids[kk]
            for j in range(K):
                out[c, g, j] += grads[kk, j]


# --------------------------------------------------------------------------------------------------------
# torch glue
# --------------------------------------------------------------------------------------------------------
def _np(x: Tensor) -> np.ndarray:
    """A C-contiguous numpy view or copy (numpy copies: torch would spread a copy over its OpenMP pool)."""
    return np.ascontiguousarray(x.detach().numpy())


_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def _forget_pool_after_fork() -> None:
    """A forked child inherits the pool object but not its threads: start afresh there."""
    global _pool, _pool_size, _pool_lock
    _pool, _pool_size, _pool_lock = None, 0, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _run_tiles(kernel, n_jobs: int, *args) -> None:
    """Run kernel(jobs, *args) over all tiles on torch.get_num_threads() threads.

    Plain Python threads around nogil numba kernels, rather than numba's parallel=True: numba's OpenMP
    pool spin-waits after each kernel and starves the torch ops that follow (measured: 2.6x slower
    fwd+bwd), and this way needs no threading layer and is safe to call from several threads at once.
    The tiles are dealt out interleaved (busy image regions are shared) in 4 chunks per thread, taken from
    the pool's queue as threads come free: on a shared machine a thread that loses its core for a time
    slice does not hold up the others.
    """
    global _pool, _pool_size
    n = max(1, min(torch.get_num_threads(), n_jobs))
    if n == 1:
        kernel(np.arange(n_jobs), *args)
        return
    with _pool_lock:
        if _pool is None or _pool_size < n:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_size = ThreadPoolExecutor(n, thread_name_prefix="cpu_raster"), n
        pool = _pool
    chunks = min(4 * n, n_jobs)
    futures = [pool.submit(kernel, np.arange(i, n_jobs, chunks), *args) for i in range(chunks)]
    for f in futures:
        f.result()


def _composite(means2d, conics, colors, opacities, background, radii, depths, width, height):
    """Bin and composite CHANNELS channels -> (kernel args, colour [C,H,W,4], T [C,H,W], last [C,H,W])."""
    C = means2d.shape[0]
    npdt = np.dtype(str(colors.dtype).removeprefix("torch."))
    tiles_x = (width + TILE - 1) // TILE
    tiles_y = (height + TILE - 1) // TILE
    radii_np = _np(radii).astype(np.int64)
    m2 = _np(means2d).astype(npdt, copy=False)
    order = np.argsort(_np(depths), axis=1, kind="stable")  # front to back, ties by index (as gsplat)
    offsets, ids = _bin(_tile_rects(m2, radii_np, tiles_x, tiles_y), order, tiles_x, tiles_y)
    pxs = np.arange(width, dtype=npdt) + npdt.type(0.5)  # pixel centres
    pys = np.arange(height, dtype=npdt) + npdt.type(0.5)
    out_col = np.empty((C, height, width, CHANNELS), npdt)
    out_T = np.empty((C, height, width), npdt)
    out_last = np.empty((C, height, width), np.int32)
    as_dt = lambda x: _np(x).astype(npdt, copy=False)  # noqa: E731
    args = (
        C * tiles_x * tiles_y, tiles_x, m2, as_dt(conics), as_dt(colors), as_dt(opacities), radii_np,
        as_dt(background), offsets, ids, pxs, pys, _constants(npdt),
    )  # fmt: skip
    _run_tiles(_fwd, *args, out_col, out_T, out_last)
    return args, out_col, out_T, out_last


def _composite_backward(args, out_T, out_last, v_col, v_alpha) -> np.ndarray:
    """Gradient rows per camera and Gaussian [C, N, N_GRAD] (layout: see N_GRAD)."""
    m2, offsets, ids = args[2], args[8], args[9]
    C, N = m2.shape[:2]
    grads = np.zeros((len(ids), N_GRAD), out_T.dtype)
    _run_tiles(_bwd, *args, out_T, out_last, v_col, v_alpha, grads)
    per_g = np.zeros((C, N, N_GRAD), out_T.dtype)
    _scatter(grads, offsets, ids, C, args[0] // C, per_g)
    return per_g


def _param_grads(ctx, per_g: np.ndarray) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Torch views (means2d, conics, colours, opacities) of the per-Gaussian gradient rows; sets absgrad."""
    g = torch.from_numpy(per_g)
    if ctx.absgrad:
        ctx.means2d.absgrad = g[..., 6:8].clone()
    return g[..., 0:2], g[..., 2:5], g[..., 8:], g[..., 5]


def _zeros_or(v: Tensor | None, shape, dtype) -> np.ndarray:
    return np.zeros(shape, dtype) if v is None else _np(v).astype(dtype, copy=False)


class _Rasterize(torch.autograd.Function):
    """Composites exactly CHANNELS channels; rasterize() handles other channel counts."""

    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, background, radii, depths, width, height, absgrad):
        args, out_col, out_T, out_last = _composite(
            means2d, conics, colors, opacities, background, radii, depths, width, height
        )
        ctx.args, ctx.absgrad, ctx.means2d = args, absgrad, (means2d if absgrad else None)
        ctx.out = (out_T, out_last)
        return torch.from_numpy(out_col), torch.from_numpy(1.0 - out_T[..., None])

    @staticmethod
    def backward(ctx, v_col, v_alpha):
        out_T, out_last = ctx.out
        v_col = _zeros_or(v_col, (*out_T.shape, CHANNELS), out_T.dtype)
        v_alpha = _zeros_or(v_alpha, (*out_T.shape, 1), out_T.dtype)[..., 0].copy()
        per_g = _composite_backward(ctx.args, out_T, out_last, v_col, v_alpha)
        v_bg = None
        if ctx.needs_input_grad[4]:
            v_bg = torch.from_numpy(np.einsum("chw,chwd->cd", out_T, v_col))
        return *_param_grads(ctx, per_g), v_bg, None, None, None, None, None


@_jit
def _split_rgbd(col, T, rgb, depth, alpha):
    """Composited (rgb, sum w z) and T -> rgb, expected depth sum(w z) / sum(w) (0 where nothing), alpha."""
    C, H, W = T.shape
    for c in range(C):
        for y in range(H):
            for x in range(W):
                a = 1.0 - T[c, y, x]
                alpha[c, y, x, 0] = a
                depth[c, y, x, 0] = col[c, y, x, 3] / max(a, 1e-10)
                for ch in range(3):
                    rgb[c, y, x, ch] = col[c, y, x, ch]


@_jit
def _join_rgbd_grads(col, T, v_rgb, v_depth, v_alpha, v_col, v_a):
    """Backward of _split_rgbd: (d/d rgb, d/d depth, d/d alpha) -> d/d composited colour and d/d alpha."""
    C, H, W = T.shape
    for c in range(C):
        for y in range(H):
            for x in range(W):
                a = 1.0 - T[c, y, x]
                den = max(a, 1e-10)
                for ch in range(3):
                    v_col[c, y, x, ch] = v_rgb[c, y, x, ch]
                vd = v_depth[c, y, x, 0]
                v_col[c, y, x, 3] = vd / den
                v_a[c, y, x] = v_alpha[c, y, x, 0]
                if a >= 1e-10:  # the clamp has no gradient below it
                    v_a[c, y, x] -= vd * col[c, y, x, 3] / (den * den)


class _RasterizeRGBD(torch.autograd.Function):
    """Colour + expected depth + alpha in one step, so no image-sized torch ops run on the way (on a
    shared machine each torch op on a large tensor can stall in torch's OpenMP pool)."""

    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, background, radii, depths, width, height, absgrad):
        bg = torch.cat([background.detach(), background.new_zeros((background.shape[0], 1))], dim=-1)
        args, out_col, out_T, out_last = _composite(
            means2d, conics, colors, opacities, bg, radii, depths, width, height
        )
        rgb = np.empty((*out_T.shape, 3), out_T.dtype)
        depth = np.empty((*out_T.shape, 1), out_T.dtype)
        alpha = np.empty((*out_T.shape, 1), out_T.dtype)
        _split_rgbd(out_col, out_T, rgb, depth, alpha)
        ctx.args, ctx.absgrad, ctx.means2d = args, absgrad, (means2d if absgrad else None)
        ctx.out = (out_col, out_T, out_last)
        return torch.from_numpy(rgb), torch.from_numpy(depth), torch.from_numpy(alpha)

    @staticmethod
    def backward(ctx, v_rgb, v_depth, v_alpha):
        out_col, out_T, out_last = ctx.out
        dt = out_T.dtype
        v_rgb = _zeros_or(v_rgb, (*out_T.shape, 3), dt)
        v_depth = _zeros_or(v_depth, (*out_T.shape, 1), dt)
        v_alpha = _zeros_or(v_alpha, (*out_T.shape, 1), dt)
        v_col = np.empty((*out_T.shape, CHANNELS), dt)
        v_a = np.empty(out_T.shape, dt)
        _join_rgbd_grads(out_col, out_T, v_rgb, v_depth, v_alpha, v_col, v_a)
        per_g = _composite_backward(ctx.args, out_T, out_last, v_col, v_a)
        v_bg = None
        if ctx.needs_input_grad[4]:
            v_bg = torch.from_numpy(np.einsum("chw,chwd->cd", out_T, v_rgb))
        return *_param_grads(ctx, per_g), v_bg, None, None, None, None, None


def rasterize_rgbd(
    means2d: Tensor,  # [C, N, 2]
    conics: Tensor,  # [C, N, 3]
    colors: Tensor,  # [C, N, 4]: rgb and camera z-depth
    opacities: Tensor,  # [C, N]
    radii: Tensor,  # [C, N, 2] int, 0 = culled
    width: int,
    height: int,
    background: Tensor | None = None,  # [C, 3]
    absgrad: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """-> rgb [C, H, W, 3] (over the background), expected depth [C, H, W, 1] (sum w z / sum w, 0 where
    nothing was drawn) and alpha [C, H, W, 1], as gsplat's render_mode="RGB+ED"; sorted by colors[..., 3]."""
    C = means2d.shape[0]
    dtype = colors.dtype
    if colors.shape[-1] != 4:
        raise ValueError(f"rasterize_rgbd takes colours [C, N, 4] (rgb, depth), got {tuple(colors.shape)}")
    background = torch.zeros((C, 3), dtype=dtype) if background is None else background.to(dtype).expand(C, 3)
    return _RasterizeRGBD.apply(
        means2d, conics, colors, opacities, background, radii, colors[..., 3], width, height, absgrad
    )


def rasterize(
    means2d: Tensor,  # [C, N, 2]
    conics: Tensor,  # [C, N, 3]
    colors: Tensor,  # [C, N, D]
    opacities: Tensor,  # [C, N]
    radii: Tensor,  # [C, N, 2] int, 0 = culled
    depths: Tensor,  # [C, N] sort key (front to back)
    width: int,
    height: int,
    background: Tensor | None = None,  # [C, D]
    absgrad: bool = False,
) -> tuple[Tensor, Tensor]:
    """Composite projected Gaussians -> (colours [C, H, W, D], alphas [C, H, W, 1]); differentiable w.r.t.
    means2d, conics, colors, opacities and background. With absgrad, after backward means2d.absgrad holds
    the per-pixel sum of |d loss / d means2d| (as gsplat's absgrad)."""
    if means2d.device.type != "cpu":
        raise ValueError("cpu_raster.rasterize takes CPU tensors; use gsplat.rasterization on CUDA")
    C = means2d.shape[0]
    D = colors.shape[-1]
    dtype = colors.dtype
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"cpu_raster.rasterize supports float32/float64 colours, got {dtype}")
    means2d, conics, opacities = (x.to(dtype) for x in (means2d, conics, opacities))
    background = torch.zeros((C, D), dtype=dtype) if background is None else background.to(dtype).expand(C, D)
    # The kernels take CHANNELS channels; other counts run in groups (alpha does not depend on colour).
    pad = -D % CHANNELS
    if pad:
        colors = torch.cat([colors, colors.new_zeros((*colors.shape[:-1], pad))], dim=-1)
        background = torch.cat([background, background.new_zeros((C, pad))], dim=-1)
    if D == CHANNELS:
        return _Rasterize.apply(
            means2d, conics, colors, opacities, background, radii, depths, width, height, absgrad
        )
    outs, alpha = [], None
    for j in range(0, D + pad, CHANNELS):
        out, a = _Rasterize.apply(
            means2d, conics, colors[..., j : j + CHANNELS], opacities, background[:, j : j + CHANNELS],
            radii, depths, width, height, absgrad and j == 0,
        )  # fmt: skip
        outs.append(out)
        alpha = a if alpha is None else alpha
    return torch.cat(outs, dim=-1)[..., :D], alpha
