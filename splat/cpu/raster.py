"""Differentiable tile rasterizer for CPUs: the torch entry points around the numba compositing kernels.

The compositing rule is gsplat 1.5.3's, so CPU and CUDA images agree:
- pixel (x, y) is sampled at its centre (x + 0.5, y + 0.5);
- alpha = min(0.999, opacity * exp(-sigma)), sigma = 0.5 (a dx^2 + c dy^2) + b dx dy with conic (a, b, c);
- a Gaussian with sigma < 0 or alpha < 1/255 is skipped;
- a pixel stops (excluding the Gaussian that would do it) once its transmittance would drop to <= 1e-4;
- colour = sum_i c_i alpha_i T_i + T_final * background, returned alpha = 1 - T_final.

How it is fast (each step chosen by measurement, see benchmarks/bench_render.py):
- Gaussians are binned into 16x16 tiles in depth order (splat.cpu.binning): one stable sort per camera,
  then a counting fill, so every tile's list comes out sorted. Tiles are independent:
  torch.get_num_threads() Python threads run them through nogil numba kernels (see splat.cpu.threads for
  why not numba's own parallel=True).
- Within a tile (splat.cpu.composite_forward), a Gaussian is composited onto whole 16-pixel rows at once
  (only the rows its ellipse reaches, skipping rows that are already saturated), written without branches
  so LLVM turns each row into SIMD instructions, the way a GPU warp runs a tile. exp() is computed with
  arithmetic only (splat.cpu.tile_math: exponent bits + a degree-7 polynomial, relative error < 1e-7)
  because a libm call would stop vectorisation.
- The backward pass (splat.cpu.composite_backward) walks each tile back to front, recovering the
  transmittance by division (T_i = T_{i+1} / (1 - alpha_i)) as gsplat does, accumulates per-lane partial
  sums, and writes one gradient row per (tile, Gaussian) intersection; rows are summed per Gaussian
  afterwards, so threads never write to the same memory.
- No image-sized torch op runs on the way: rasterize_rgbd() (what render() uses) splits colour, expected
  depth and alpha inside numba, and buffers are numpy's, because on a shared machine torch's OpenMP pool
  stalls for a scheduler time slice on a good fraction of large ops.
Kernels are generic over float32/float64 and composite 4 channels at a time (RGB + depth in render());
numba caches the compiled machine code on disk after the first call (compiling takes ~10-20 s per dtype).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from splat.cpu.binning import bin_by_tile, tile_rects
from splat.cpu.composite_backward import N_GRAD, backward_tiles, scatter_rows
from splat.cpu.composite_forward import forward_tiles
from splat.cpu.jit import jit
from splat.cpu.threads import run_jobs
from splat.cpu.tile_math import TILE, kernel_constants

CHANNELS = 4  # the kernels composite this many channels at once; rasterize() splits or pads to it


def _np(x: Tensor) -> np.ndarray:
    """A C-contiguous numpy view or copy (numpy copies: torch would spread a copy over its OpenMP pool)."""
    return np.ascontiguousarray(x.detach().numpy())


def _composite(means2d, conics, colors, opacities, background, radii, depths, width, height):
    """Bin and composite CHANNELS channels -> (kernel args, colour [C,H,W,4], T [C,H,W], last [C,H,W])."""
    C = means2d.shape[0]
    npdt = np.dtype(str(colors.dtype).removeprefix("torch."))
    tiles_x = (width + TILE - 1) // TILE
    tiles_y = (height + TILE - 1) // TILE
    radii_np = _np(radii).astype(np.int64)
    m2 = _np(means2d).astype(npdt, copy=False)
    order = np.argsort(_np(depths), axis=1, kind="stable")  # front to back, ties by index (as gsplat)
    offsets, ids = bin_by_tile(tile_rects(m2, radii_np, tiles_x, tiles_y), order, tiles_x, tiles_y)
    pxs = np.arange(width, dtype=npdt) + npdt.type(0.5)  # pixel centres
    pys = np.arange(height, dtype=npdt) + npdt.type(0.5)
    out_col = np.empty((C, height, width, CHANNELS), npdt)
    out_T = np.empty((C, height, width), npdt)
    out_last = np.empty((C, height, width), np.int32)
    as_dt = lambda x: _np(x).astype(npdt, copy=False)  # noqa: E731
    args = (
        C * tiles_x * tiles_y, tiles_x, m2, as_dt(conics), as_dt(colors), as_dt(opacities), radii_np,
        as_dt(background), offsets, ids, pxs, pys, kernel_constants(npdt),
    )  # fmt: skip
    run_jobs(forward_tiles, *args, out_col, out_T, out_last)
    return args, out_col, out_T, out_last


def _composite_backward(args, out_T, out_last, v_col, v_alpha) -> np.ndarray:
    """Gradient rows per camera and Gaussian [C, N, N_GRAD] (layout: see N_GRAD)."""
    m2, offsets, ids = args[2], args[8], args[9]
    C, N = m2.shape[:2]
    grads = np.zeros((len(ids), N_GRAD), out_T.dtype)
    run_jobs(backward_tiles, *args, out_T, out_last, v_col, v_alpha, grads)
    per_g = np.zeros((C, N, N_GRAD), out_T.dtype)
    scatter_rows(grads, offsets, ids, C, args[0] // C, per_g)
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


@jit
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


@jit
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
