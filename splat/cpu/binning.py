"""Binning Gaussians into 16x16 tiles: per tile, the list of Gaussians that touch it, in depth order.

One stable depth sort per camera (done by the caller) and then a counting fill, so every tile's list
comes out sorted without sorting per tile.
"""

from __future__ import annotations

import math

import numpy as np

from splat.cpu.jit import jit
from splat.cpu.tile_math import TILE


@jit
def tile_rects(means2d, radii, tiles_x, tiles_y):
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


@jit
def bin_by_tile(rects, order, tiles_x, tiles_y):
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
