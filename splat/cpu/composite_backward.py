"""Backward compositing kernel: per (tile, Gaussian) intersection, the gradient of the loss.

Each tile is walked back to front, recovering the transmittance by division (T_i = T_{i+1} / (1 - alpha_i))
as gsplat does; per-lane partial sums give one gradient row per intersection, and the rows are summed per
Gaussian afterwards (scatter_rows), so threads never write to the same memory.
"""

from __future__ import annotations

import numpy as np

from splat.cpu.jit import jit, vector_jit
from splat.cpu.tile_math import TILE, exp_consts, exp_neg, row_hits, row_range, sigma_at, sigma_max, tile_of

N_GRAD = 12  # per intersection: d/d(mean x, mean y, conic a, b, c, opacity), |d/dx|, |d/dy|, colour 0..3


@vector_jit
def _bwd_tile(job, tiles_x, means2d, conics, colors, opac, radii, bg, offsets, ids, pxs, pys, k,
              out_T, out_last, v_col, v_alpha, grads):  # fmt: skip
    half, thresh, amax, one, zero = k[0], k[1], k[2], k[4], k[5]
    e = exp_consts(k)
    dt = colors.dtype
    c, x0, y0, x1, y1 = tile_of(job, tiles_x, v_col.shape[1], v_col.shape[2])
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
        smax = sigma_max(o, thresh)
        r0, r1 = row_range(my, radii[c, g, 1], y0, y1)
        for r in range(r0, r1):
            if kk > row_last[r]:
                continue  # the Gaussian lies behind where every pixel of this row stopped
            dy = my - pys[y0 + r]
            if not row_hits(float(mx), float(dy), float(ca), float(cb), float(cc), smax, x0):
                continue
            base = r * TILE
            for i in range(TILE):
                p = np.uint64(base + i)
                dx = mx - px[i]
                sigma = sigma_at(dx, dy, ca, cb, cc, half)
                vis = exp_neg(sigma, e)
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


@jit
def backward_tiles(jobs, tiles_x, means2d, conics, colors, opac, radii, bg, offsets, ids, pxs, pys, k,
                   out_T, out_last, v_col, v_alpha, grads):  # fmt: skip
    for job in jobs:
        _bwd_tile(job, tiles_x, means2d, conics, colors, opac, radii, bg, offsets, ids, pxs, pys, k,
                  out_T, out_last, v_col, v_alpha, grads)  # fmt: skip


@jit
def scatter_rows(grads, offsets, ids, n_cams, n_tiles, out):
    """Sum per-intersection rows into per-(camera, Gaussian) rows: out [C, N, K] += grads [M, K]."""
    K = grads.shape[1]
    for c in range(n_cams):
        for kk in range(offsets[c * n_tiles], offsets[(c + 1) * n_tiles]):
            g = ids[kk]
            for j in range(K):
                out[c, g, j] += grads[kk, j]
