"""A small z-buffer triangle rasterizer (numba) for depth maps of exported meshes.

Used to check a fused mesh against the run's depth from the photo camera. Pixel centres sit at +0.5 (as
`splat.cameras.pixel_grid`); depth is interpolated perspective-correctly (1/z is affine in screen space);
triangles with a vertex behind the near plane are skipped (the check looks at the scene from its own
cameras, where that does not happen for seen surfaces).
"""

from __future__ import annotations

import numba
import numpy as np

_NEAR = 1e-4


@numba.njit(cache=True)
def _raster(cam: np.ndarray, faces: np.ndarray, K: np.ndarray, width: int, height: int) -> np.ndarray:
    depth = np.zeros((height, width), np.float64)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    for f in range(faces.shape[0]):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        za, zb, zc = cam[a, 2], cam[b, 2], cam[c, 2]
        if za < _NEAR or zb < _NEAR or zc < _NEAR:
            continue
        xa, ya = fx * cam[a, 0] / za + cx, fy * cam[a, 1] / za + cy
        xb, yb = fx * cam[b, 0] / zb + cx, fy * cam[b, 1] / zb + cy
        xc, yc = fx * cam[c, 0] / zc + cx, fy * cam[c, 1] / zc + cy
        area = (xb - xa) * (yc - ya) - (xc - xa) * (yb - ya)
        if abs(area) < 1e-12:
            continue
        x0 = max(0, int(np.floor(min(xa, xb, xc) - 0.5)))
        x1 = min(width - 1, int(np.ceil(max(xa, xb, xc) - 0.5)))
        y0 = max(0, int(np.floor(min(ya, yb, yc) - 0.5)))
        y1 = min(height - 1, int(np.ceil(max(ya, yb, yc) - 0.5)))
        for py in range(y0, y1 + 1):
            sy = py + 0.5
            for px in range(x0, x1 + 1):
                sx = px + 0.5
                w0 = ((xb - sx) * (yc - sy) - (xc - sx) * (yb - sy)) / area
                w1 = ((xc - sx) * (ya - sy) - (xa - sx) * (yc - sy)) / area
                w2 = 1.0 - w0 - w1
                if w0 < 0 or w1 < 0 or w2 < 0:
                    continue
                z = 1.0 / (w0 / za + w1 / zb + w2 / zc)
                if depth[py, px] == 0 or z < depth[py, px]:
                    depth[py, px] = z
    return depth


def rasterize_depth(
    cam_vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, width: int, height: int
) -> np.ndarray:
    """Camera-space vertices [V, 3] (OpenCV axes) + faces [F, 3] -> z-depth [H, W] (0: empty)."""
    if len(faces) == 0:
        return np.zeros((height, width), np.float64)
    return _raster(
        np.ascontiguousarray(cam_vertices, np.float64),
        np.ascontiguousarray(faces, np.int64),
        np.ascontiguousarray(K, np.float64),
        int(width),
        int(height),
    )
