"""Forward compositing kernel: each tile's depth-sorted Gaussians composited front to back onto its pixels.

A Gaussian is composited onto whole 16-pixel rows at once (only the rows its ellipse reaches, skipping
rows that are already saturated), written without branches so LLVM turns each row into SIMD instructions,
the way a GPU warp runs a tile.
"""

from __future__ import annotations

import numpy as np

from splat.cpu.jit import jit, vector_jit
from splat.cpu.tile_math import TILE, exp_consts, exp_neg, row_hits, row_range, sigma_at, sigma_max, tile_of


@vector_jit
def _fwd_tile(job, tiles_x, means2d, conics, colors, opac, radii, bg, offsets, ids, pxs, pys, k,
              out_col, out_T, out_last):  # fmt: skip
    half, thresh, amax, tstop, one, zero = k[0], k[1], k[2], k[3], k[4], k[5]
    e = exp_consts(k)
    dt = colors.dtype
    c, x0, y0, x1, y1 = tile_of(job, tiles_x, out_col.shape[1], out_col.shape[2])
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
        smax = sigma_max(o, thresh)
        r0, r1 = row_range(my, radii[c, g, 1], y0, y1)
        for r in range(r0, r1):
            if row_live[r] == 0:
                continue
            dy = my - pys[y0 + r]
            if not row_hits(float(mx), float(dy), float(ca), float(cb), float(cc), smax, x0):
                continue
            base = r * TILE
            stops = 0
            for i in range(TILE):
                p = np.uint64(base + i)  # unsigned: no negative-index check, so the loop vectorises
                dx = mx - px[i]
                sigma = sigma_at(dx, dy, ca, cb, cc, half)
                alpha = min(amax, o * exp_neg(sigma, e))
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


@jit
def forward_tiles(jobs, tiles_x, means2d, conics, colors, opac, radii, bg, offsets, ids, pxs, pys, k,
                  out_col, out_T, out_last):  # fmt: skip
    for job in jobs:
        _fwd_tile(job, tiles_x, means2d, conics, colors, opac, radii, bg, offsets, ids, pxs, pys, k,
                  out_col, out_T, out_last)  # fmt: skip
