"""Real spherical harmonics, degrees 0..3, in the basis and sign convention gsplat and 3DGS use.

colour = sum_k basis_k(dir) * coeff_k, with `dir` the unit vector from the camera centre to the Gaussian.
The constants are the standard real-SH normalisation factors (Sloan, "Efficient Spherical Harmonic
Evaluation", JCGT 2013); the signs follow 3DGS so that .ply files from other tools keep their colours.
"""

from __future__ import annotations

import torch
from torch import Tensor

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, 0.31539156525252005, 0.5462742152960396)
C3 = (0.5900435899266435, 2.890611442640554, 0.4570457994644658, 0.3731763325901154, 1.445305721320277)


def num_bases(degree: int) -> int:
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree must be 0..3, got {degree}")
    return (degree + 1) ** 2


def sh_bases(degree: int, dirs: Tensor) -> Tensor:
    """Basis values for unit directions dirs [..., 3] -> [..., (degree+1)^2]."""
    n = num_bases(degree)
    out = [torch.full_like(dirs[..., 0], C0)]
    if degree >= 1:
        x, y, z = dirs.unbind(-1)
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            C2[0] * x * y,
            -C2[0] * y * z,
            C2[1] * (3.0 * zz - 1.0),
            -C2[0] * x * z,
            C2[2] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            -C3[0] * y * (3.0 * xx - yy),
            C3[1] * x * y * z,
            -C3[2] * y * (5.0 * zz - 1.0),
            C3[3] * z * (5.0 * zz - 3.0),
            -C3[2] * x * (5.0 * zz - 1.0),
            C3[4] * z * (xx - yy),
            -C3[0] * x * (xx - 3.0 * yy),
        ]
    assert len(out) == n
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """SH colour for directions dirs [..., 3] (any length) and coeffs [..., K, 3] with K >= (degree+1)^2.

    Returns [..., 3] *without* the +0.5 offset and clamp (render applies those, as gsplat does).
    Only the first (degree+1)^2 coefficients are used, so a lower `degree` renders a high-degree model
    with its view dependence switched off progressively.
    """
    n = num_bases(degree)
    if coeffs.shape[-2] < n:
        raise ValueError(f"SH degree {degree} needs {n} coefficients, got {coeffs.shape[-2]}")
    if degree == 0:
        return C0 * coeffs[..., 0, :]
    unit = torch.nn.functional.normalize(dirs, dim=-1)
    bases = sh_bases(degree, unit)  # [..., n]
    return (bases[..., None] * coeffs[..., :n, :]).sum(dim=-2)
