"""Real spherical-harmonics basis (degree <= 3) and its direction gradient, as numba kernels.

The same values as splat/sh.py computes in torch, for the fused CPU projection.
"""

from __future__ import annotations

from splat.cpu.jit import jit
from splat.sh import C0, C1, C2, C3


@jit
def sh_basis(d, x, y, z, out):
    """Real SH basis values (degree d <= 3) at a unit direction into out[:16]."""
    out[0] = C0
    if d < 1:
        return
    out[1] = -C1 * y
    out[2] = C1 * z
    out[3] = -C1 * x
    if d < 2:
        return
    xx, yy, zz = x * x, y * y, z * z
    out[4] = C2[0] * x * y
    out[5] = -C2[0] * y * z
    out[6] = C2[1] * (3.0 * zz - 1.0)
    out[7] = -C2[0] * x * z
    out[8] = C2[2] * (xx - yy)
    if d < 3:
        return
    out[9] = -C3[0] * y * (3.0 * xx - yy)
    out[10] = C3[1] * x * y * z
    out[11] = -C3[2] * y * (5.0 * zz - 1.0)
    out[12] = C3[3] * z * (5.0 * zz - 3.0)
    out[13] = -C3[2] * x * (5.0 * zz - 1.0)
    out[14] = C3[4] * z * (xx - yy)
    out[15] = -C3[0] * x * (xx - 3.0 * yy)


@jit
def sh_basis_grad(d, x, y, z, w):
    """sum_k w[k] * d basis_k / d(x, y, z) for degree d <= 3 (w: the loss gradient per basis function)."""
    gx = gy = gz = 0.0
    if d < 1:
        return gx, gy, gz
    gy -= C1 * w[1]
    gz += C1 * w[2]
    gx -= C1 * w[3]
    if d < 2:
        return gx, gy, gz
    a, b, c = C2
    gx += a * y * w[4]
    gy += a * x * w[4]
    gy -= a * z * w[5]
    gz -= a * y * w[5]
    gz += 6.0 * b * z * w[6]
    gx -= a * z * w[7]
    gz -= a * x * w[7]
    gx += 2.0 * c * x * w[8]
    gy -= 2.0 * c * y * w[8]
    if d < 3:
        return gx, gy, gz
    c3a, c3b, c3c, c3d, c3e = C3
    xx, yy, zz = x * x, y * y, z * z
    gx -= 6.0 * c3a * x * y * w[9]
    gy -= c3a * (3.0 * xx - 3.0 * yy) * w[9]
    gx += c3b * y * z * w[10]
    gy += c3b * x * z * w[10]
    gz += c3b * x * y * w[10]
    gy -= c3c * (5.0 * zz - 1.0) * w[11]
    gz -= 10.0 * c3c * y * z * w[11]
    gz += c3d * (15.0 * zz - 3.0) * w[12]
    gx -= c3c * (5.0 * zz - 1.0) * w[13]
    gz -= 10.0 * c3c * x * z * w[13]
    gx += 2.0 * c3e * x * z * w[14]
    gy -= 2.0 * c3e * y * z * w[14]
    gz += c3e * (xx - yy) * w[14]
    gx -= c3a * (3.0 * xx - 3.0 * yy) * w[15]
    gy += 6.0 * c3a * x * y * w[15]
    return gx, gy, gz
