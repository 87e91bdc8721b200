"""Differentiable tile rasterizer for CPUs: front-to-back alpha compositing of projected 2D Gaussians.

The compositing rule is gsplat 1.5.3's, so CPU and CUDA images agree:
- pixel (x, y) is sampled at its centre (x + 0.5, y + 0.5);
- alpha = min(0.999, opacity * exp(-sigma)), sigma = 0.5 (a dx^2 + c dy^2) + b dx dy with conic (a, b, c);
- a Gaussian with sigma < 0 or alpha < 1/255 is skipped;
- a pixel stops (excluding the Gaussian that would do it) once its transmittance would drop to <= 1e-4;
- colour = sum_i c_i alpha_i T_i + T_final * background, returned alpha = 1 - T_final.

How it is fast: Gaussians are binned into 16x16 tiles in depth order (one stable sort per camera, then a
counting fill, so every tile list comes out sorted); tiles are independent, so numba runs them in parallel
threads. Per tile, each Gaussian only visits the pixels inside its screen-space bounding box; the tile stops
as soon as every pixel is saturated. The backward pass walks each tile back to front, recovering the
transmittance by division (T_i = T_{i+1} / (1 - alpha_i)) as gsplat does, and writes one gradient row per
(tile, Gaussian) intersection, summed per Gaussian afterwards, so threads never write to the same memory.
Kernels are generic over float32/float64; numba caches the compiled code on disk after the first call.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from numba import prange
from torch import Tensor

TILE_SIZE = 16

# numba compiles these once per dtype and caches machine code next to this file (or in the user cache).
_jit = numba.njit(cache=True, nogil=True, fastmath=False)
_pjit = numba.njit(cache=True, nogil=True, parallel=True, fastmath=False)


def _constants(dtype: np.dtype) -> np.ndarray:
    # half, alpha threshold, alpha clamp, transmittance stop, one, zero; typed so float32 kernels stay float32
    return np.array([0.5, 1.0 / 255.0, 0.999, 1e-4, 1.0, 0.0], dtype=dtype)


# --------------------------------------------------------------------------------------------------------
# binning
# --------------------------------------------------------------------------------------------------------
@_jit
def _tile_rects(means2d, radii, tile_size, tiles_x, tiles_y):
    """Per camera and Gaussian, the tile range [tx0, tx1) x [ty0, ty1) its bounding box touches."""
    C, N = radii.shape[0], radii.shape[1]
    rects = np.zeros((C, N, 4), np.int64)
    for c in range(C):
        for g in range(N):
            rx = radii[c, g, 0]
            ry = radii[c, g, 1]
            if rx <= 0 or ry <= 0:
                continue
            mx = means2d[c, g, 0] / tile_size
            my = means2d[c, g, 1] / tile_size
            fx = rx / tile_size
            fy = ry / tile_size
            rects[c, g, 0] = min(max(0, math.floor(mx - fx)), tiles_x)
            rects[c, g, 1] = min(max(0, math.ceil(mx + fx)), tiles_x)
            rects[c, g, 2] = min(max(0, math.floor(my - fy)), tiles_y)
            rects[c, g, 3] = min(max(0, math.ceil(my + fy)), tiles_y)
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
# forward
# --------------------------------------------------------------------------------------------------------
@_jit
def _pixel_span(m, r, lo, hi):
    """Pixels p in [lo, hi) whose centre p + 0.5 can lie within r of m (one pixel of slack each side)."""
    a = max(lo, math.floor(m - r) - 1)
    b = min(hi, math.ceil(m + r) + 1)
    return a, b


@_jit
def _fwd_tile(
    job, tiles_x, tile_size, means2d, conics, colors, opac, radii, bg, offsets, ids, pxs, pys, k,
    out_col, out_T, out_last,
):  # fmt: skip
    half, thresh, amax, tstop, one, zero = k[0], k[1], k[2], k[3], k[4], k[5]
    T_ = tiles_x * ((out_col.shape[1] + tile_size - 1) // tile_size)
    c = job // T_
    t = job % T_
    H, W, D = out_col.shape[1], out_col.shape[2], out_col.shape[3]
    x0 = (t % tiles_x) * tile_size
    y0 = (t // tiles_x) * tile_size
    x1 = min(x0 + tile_size, W)
    y1 = min(y0 + tile_size, H)
    tw = x1 - x0
    npx = tw * (y1 - y0)
    trans = np.full(npx, one)
    acc = np.zeros((npx, D), colors.dtype)
    last = np.full(npx, -1, np.int64)
    done = np.zeros(npx, np.bool_)
    ndone = 0
    for kk in range(offsets[job], offsets[job + 1]):
        if ndone == npx:
            break
        g = ids[kk]
        mx = means2d[c, g, 0]
        my = means2d[c, g, 1]
        ca = conics[c, g, 0]
        cb = conics[c, g, 1]
        cc = conics[c, g, 2]
        o = opac[c, g]
        gx0, gx1 = _pixel_span(mx, radii[c, g, 0], x0, x1)
        gy0, gy1 = _pixel_span(my, radii[c, g, 1], y0, y1)
        for yy in range(gy0, gy1):
            dy = my - pys[yy]
            row = (yy - y0) * tw - x0
            for xx in range(gx0, gx1):
                p = row + xx
                if done[p]:
                    continue
                dx = mx - pxs[xx]
                sigma = half * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
                if sigma < zero:
                    continue
                alpha = o * math.exp(-sigma)
                if alpha > amax:
                    alpha = amax
                if alpha < thresh:
                    continue
                tp = trans[p]
                nt = tp * (one - alpha)
                if nt <= tstop:
                    done[p] = True
                    ndone += 1
                    continue
                w = alpha * tp
                for d in range(D):
                    acc[p, d] += colors[c, g, d] * w
                trans[p] = nt
                last[p] = kk
    for yy in range(y0, y1):
        for xx in range(x0, x1):
            p = (yy - y0) * tw + xx - x0
            for d in range(D):
                out_col[c, yy, xx, d] = acc[p, d] + trans[p] * bg[c, d]
            out_T[c, yy, xx] = trans[p]
            out_last[c, yy, xx] = last[p]


@_pjit
def _fwd(
    n_jobs, tiles_x, tile_size, means2d, conics, colors, opac, radii, bg, offsets, ids, pxs, pys, k,
    out_col, out_T, out_last,
):  # fmt: skip
    for job in prange(n_jobs):
        _fwd_tile(
            job, tiles_x, tile_size, means2d, conics, colors, opac, radii, bg, offsets, ids, pxs, pys, k,
            out_col, out_T, out_last,
        )  # fmt: skip


# --------------------------------------------------------------------------------------------------------
# backward
# --------------------------------------------------------------------------------------------------------
@_jit
def _bwd_tile(
    job, tiles_x, tile_size, means2d, conics, colors, opac, radii, bg, offsets, ids, pxs, pys, k,
    out_T, out_last, v_col, v_alpha, grads,
):  # fmt: skip
    """grads [M, 8 + D]: per intersection d/d(mean x, mean y, conic a, b, c, opacity, |x|, |y|, colour...)."""
    half, thresh, amax, one, zero = k[0], k[1], k[2], k[4], k[5]
    H, W, D = v_col.shape[1], v_col.shape[2], v_col.shape[3]
    T_ = tiles_x * ((H + tile_size - 1) // tile_size)
    c = job // T_
    t = job % T_
    x0 = (t % tiles_x) * tile_size
    y0 = (t // tiles_x) * tile_size
    x1 = min(x0 + tile_size, W)
    y1 = min(y0 + tile_size, H)
    tw = x1 - x0
    npx = tw * (y1 - y0)
    start = offsets[job]
    trans = np.empty(npx, colors.dtype)
    tfin = np.empty(npx, colors.dtype)
    vA_bg = np.empty(npx, colors.dtype)  # T_final-weighted (dL/dalpha - background . dL/dcolour)
    vC = np.empty((npx, D), colors.dtype)
    last = np.empty(npx, np.int64)
    kmax = start - 1
    for yy in range(y0, y1):
        for xx in range(x0, x1):
            p = (yy - y0) * tw + xx - x0
            trans[p] = out_T[c, yy, xx]
            tfin[p] = out_T[c, yy, xx]
            last[p] = out_last[c, yy, xx]
            kmax = max(kmax, last[p])
            s = v_alpha[c, yy, xx]
            for d in range(D):
                vC[p, d] = v_col[c, yy, xx, d]
                s -= bg[c, d] * v_col[c, yy, xx, d]
            vA_bg[p] = tfin[p] * s
    S = np.zeros((npx, D), colors.dtype)
    gcol = np.zeros(D, colors.dtype)
    for kk in range(kmax, start - 1, -1):
        g = ids[kk]
        mx = means2d[c, g, 0]
        my = means2d[c, g, 1]
        ca = conics[c, g, 0]
        cb = conics[c, g, 1]
        cc = conics[c, g, 2]
        o = opac[c, g]
        gx = zero
        gy = zero
        ga = zero
        gb = zero
        gc = zero
        go = zero
        ax = zero
        ay = zero
        for d in range(D):
            gcol[d] = zero
        gx0, gx1 = _pixel_span(mx, radii[c, g, 0], x0, x1)
        gy0, gy1 = _pixel_span(my, radii[c, g, 1], y0, y1)
        for yy in range(gy0, gy1):
            dy = my - pys[yy]
            row = (yy - y0) * tw - x0
            for xx in range(gx0, gx1):
                p = row + xx
                if kk > last[p]:
                    continue
                dx = mx - pxs[xx]
                sigma = half * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
                if sigma < zero:
                    continue
                vis = math.exp(-sigma)
                raw = o * vis
                alpha = raw
                if alpha > amax:
                    alpha = amax
                if alpha < thresh:
                    continue
                ra = one / (one - alpha)
                tp = trans[p] * ra
                trans[p] = tp
                w = alpha * tp
                v_a = vA_bg[p] * ra
                for d in range(D):
                    col = colors[c, g, d]
                    gcol[d] += w * vC[p, d]
                    v_a += (col * tp - S[p, d] * ra) * vC[p, d]
                    S[p, d] += col * w
                if raw <= amax:
                    v_sig = -raw * v_a
                    go += vis * v_a
                    ga += half * dx * dx * v_sig
                    gb += dx * dy * v_sig
                    gc += half * dy * dy * v_sig
                    px_ = v_sig * (ca * dx + cb * dy)
                    py_ = v_sig * (cb * dx + cc * dy)
                    gx += px_
                    gy += py_
                    ax += abs(px_)
                    ay += abs(py_)
        grads[kk, 0] = gx
        grads[kk, 1] = gy
        grads[kk, 2] = ga
        grads[kk, 3] = gb
        grads[kk, 4] = gc
        grads[kk, 5] = go
        grads[kk, 6] = ax
        grads[kk, 7] = ay
        for d in range(D):
            grads[kk, 8 + d] = gcol[d]


@_pjit
def _bwd(
    n_jobs, tiles_x, tile_size, means2d, conics, colors, opac, radii, bg, offsets, ids, pxs, pys, k,
    out_T, out_last, v_col, v_alpha, grads,
):  # fmt: skip
    for job in prange(n_jobs):
        _bwd_tile(
            job, tiles_x, tile_size, means2d, conics, colors, opac, radii, bg, offsets, ids, pxs, pys, k,
            out_T, out_last, v_col, v_alpha, grads,
        )  # fmt: skip


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
    return x.detach().contiguous().numpy()


def _use_torch_threads() -> None:
    """numba follows torch's thread count so `torch.set_num_threads` governs the whole renderer."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


class _Rasterize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, background, radii, depths, width, height, tile_size,
                absgrad):  # fmt: skip
        C = means2d.shape[0]
        D = colors.shape[-1]
        dtype = colors.dtype
        tiles_x = (width + tile_size - 1) // tile_size
        tiles_y = (height + tile_size - 1) // tile_size
        radii_np = _np(radii).astype(np.int64)
        m2 = _np(means2d)
        order = np.argsort(_np(depths), axis=1, kind="stable")  # front to back, ties by index
        rects = _tile_rects(m2, radii_np, tile_size, tiles_x, tiles_y)
        offsets, ids = _bin(rects, order, tiles_x, tiles_y)
        npdt = np.dtype(str(dtype).replace("torch.", ""))
        k = _constants(npdt)
        pxs = np.arange(width, dtype=npdt) + npdt.type(0.5)
        pys = np.arange(height, dtype=npdt) + npdt.type(0.5)
        out_col = torch.empty((C, height, width, D), dtype=dtype)
        out_T = torch.empty((C, height, width), dtype=dtype)
        out_last = torch.empty((C, height, width), dtype=torch.int64)
        bg = _np(background)
        args = (
            C * tiles_x * tiles_y, tiles_x, tile_size, m2, _np(conics), _np(colors), _np(opacities),
            radii_np, bg, offsets, ids, pxs, pys, k,
        )  # fmt: skip
        _use_torch_threads()
        _fwd(*args, out_col.numpy(), out_T.numpy(), out_last.numpy())
        ctx.args = args
        ctx.absgrad = absgrad
        ctx.means2d = means2d if absgrad else None
        ctx.save_for_backward(out_T, out_last)
        ctx.mark_non_differentiable(out_T, out_last)
        return out_col, (1.0 - out_T)[..., None]

    @staticmethod
    def backward(ctx, v_col, v_alpha):
        out_T, out_last = ctx.saved_tensors
        args = ctx.args
        m2, colors_np, ids = args[3], args[5], args[10]
        C, N = m2.shape[:2]
        D = colors_np.shape[-1]
        n_tiles = args[0] // C
        v_col = v_col.contiguous() if v_col is not None else torch.zeros((C, *out_T.shape[1:], D))
        v_alpha = v_alpha[..., 0].contiguous() if v_alpha is not None else torch.zeros_like(out_T)
        v_col = v_col.to(out_T.dtype)
        v_alpha = v_alpha.to(out_T.dtype)
        grads = np.zeros((len(ids), 8 + D), dtype=colors_np.dtype)
        _use_torch_threads()
        _bwd(*args, out_T.numpy(), out_last.numpy(), v_col.numpy(), v_alpha.numpy(), grads)
        per_g = np.zeros((C, N, 8 + D), dtype=colors_np.dtype)
        _scatter(grads, args[9], ids, C, n_tiles, per_g)
        per_g = torch.from_numpy(per_g)
        v_means2d = per_g[..., 0:2]
        if ctx.absgrad:
            ctx.means2d.absgrad = per_g[..., 6:8].clone()
        v_bg = None
        if ctx.needs_input_grad[4]:
            v_bg = (out_T[..., None] * v_col).sum(dim=(1, 2))
        return (
            v_means2d,
            per_g[..., 2:5],
            per_g[..., 8:],
            per_g[..., 5],
            v_bg,
            None,
            None,
            None,
            None,
            None,
            None,
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
    tile_size: int = TILE_SIZE,
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
    if background is None:
        background = torch.zeros((C, D), dtype=dtype)
    background = background.to(dtype).expand(C, D)
    return _Rasterize.apply(
        means2d, conics, colors, opacities, background, radii, depths, width, height, tile_size, absgrad
    )
