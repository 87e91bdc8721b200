"""Per-pixel maths shared by the forward and backward tile kernels (inlined; both must round identically).

Also the tile size and the kernel constants, in the kernel's float type. exp() is computed with arithmetic
only (exponent bits + a degree-7 polynomial, relative error < 1e-7) because a libm call would stop
vectorisation.
"""

from __future__ import annotations

import math

import numpy as np

from splat.cpu.jit import jit, vector_jit

TILE = 16  # tile side in pixels; a tile row is one SIMD-friendly 16-lane loop

# 2^f on [0, 1): Chebyshev fit of degree 7 (relative error 5.6e-11 in float64, < 1e-7 in float32).
_EXP2_POLY = (
    0.9999999999438559, 0.6931471877102505, 0.24022635776944545, 0.05550529197915104,
    0.009613535728324879, 0.0013429810764820297, 0.00014299400872360777, 2.165172542013508e-05,
)  # fmt: skip


def kernel_constants(dtype: np.dtype) -> np.ndarray:
    """Kernel constants in the kernel's float type (a float64 literal would turn float32 maths into float64):
    half, alpha threshold, alpha clamp, transmittance stop, one, zero, -log2(e), lowest exponent, poly."""
    return np.array(
        [0.5, 1.0 / 255.0, 0.999, 1e-4, 1.0, 0.0, -1.4426950408889634, -126.0, *_EXP2_POLY], dtype
    )


@jit
def exp_consts(k):
    """The exp constants as a tuple: values held in registers, not loads that might alias the tile state
    (with loads from `k` inside the pixel loop LLVM gives up vectorising the backward pass: 5x slower)."""
    return (k[6], k[7], k[8], k[9], k[10], k[11], k[12], k[13], k[14], k[15])


@vector_jit
def exp_neg(s, e):
    """exp(-s) with arithmetic only: 2^y = 2^floor(y) (exponent bits) * 2^frac(y) (polynomial);
    e = exp_consts(k)."""
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


@vector_jit
def sigma_at(dx, dy, ca, cb, cc, half):
    return half * (ca * dx * dx + cc * dy * dy) + cb * dx * dy


@jit
def tile_of(job, tiles_x, H, W):
    tiles = tiles_x * ((H + TILE - 1) // TILE)
    c = job // tiles
    t = job % tiles
    x0 = (t % tiles_x) * TILE
    y0 = (t // tiles_x) * TILE
    return c, x0, y0, min(x0 + TILE, W), min(y0 + TILE, H)


@jit
def row_hits(mx, dy, ca, cb, cc, smax, x0):
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


@jit
def sigma_max(o, thresh):
    """Beyond this sigma a Gaussian of opacity o has alpha < thresh (plus a margin for rounding)."""
    return math.log(max(float(o), 1e-30) / float(thresh)) + 1e-3


@jit
def row_range(my, ry, y0, y1):
    """Tile rows (relative to y0) that the Gaussian's bounding box can reach, one row of slack each side."""
    return max(y0, math.floor(my - ry) - 1) - y0, min(y1, math.ceil(my + ry) + 1) - y0
