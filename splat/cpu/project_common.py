"""What the forward and backward projection kernels share: Gaussians per job, rotation, camera terms."""

from __future__ import annotations

import math

import numpy as np

from splat.cpu.jit import jit

BLOCK = 1024  # Gaussians per job when the projection is shared between threads


@jit
def gaussians_of(jobs, n):
    """The Gaussian indices of a list of jobs (blocks of BLOCK consecutive Gaussians)."""
    out = np.empty(len(jobs) * BLOCK, np.int64)
    k = 0
    for j in jobs:
        for g in range(j * BLOCK, min(n, (j + 1) * BLOCK)):
            out[k] = g
            k += 1
    return out[:k]


@jit
def rotation(q, R):
    """Normalised quaternion (w, x, y, z) and its norm; its rotation matrix into R [3, 3]."""
    n = math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3])
    n = max(n, 1e-12)
    w, x, y, z = q[0] / n, q[1] / n, q[2] / n, q[3] / n
    R[0, 0] = 1.0 - 2.0 * (y * y + z * z)
    R[0, 1] = 2.0 * (x * y - w * z)
    R[0, 2] = 2.0 * (x * z + w * y)
    R[1, 0] = 2.0 * (x * y + w * z)
    R[1, 1] = 1.0 - 2.0 * (x * x + z * z)
    R[1, 2] = 2.0 * (y * z - w * x)
    R[2, 0] = 2.0 * (x * z - w * y)
    R[2, 1] = 2.0 * (y * z + w * x)
    R[2, 2] = 1.0 - 2.0 * (x * x + y * y)
    return w, x, y, z, n


@jit
def camera_terms(viewmat, K, width, height, p, t):
    """Camera-space mean into t [3]; the clamped x/z and y/z of the Jacobian; whether each is unclamped."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    for i in range(3):
        t[i] = viewmat[i, 0] * p[0] + viewmat[i, 1] * p[1] + viewmat[i, 2] * p[2] + viewmat[i, 3]
    lxp = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lxn = cx / fx + 0.3 * (0.5 * width / fx)
    lyp = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lyn = cy / fy + 0.3 * (0.5 * height / fy)
    u = t[0] / t[2]
    v = t[1] / t[2]
    uc = min(max(u, -lxn), lxp)
    vc = min(max(v, -lyn), lyp)
    return uc, vc, -lxn <= u <= lxp, -lyn <= v <= lyp
