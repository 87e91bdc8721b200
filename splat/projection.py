"""EWA projection of 3D Gaussians to screen space, in plain differentiable torch.

The CPU renderer uses splat/cpu/project.py (the same maths, fused in numba, ~8x faster) and falls back to
this module when the camera matrices need gradients (pose refinement), which autograd gives here for free.

Conventions follow gsplat 1.5.3's CUDA `fully_fused_projection` so CPU and CUDA renders agree:
- covariance = R(q) S S^T R(q)^T with q a (w, x, y, z) quaternion (normalised here) and S = diag(scales);
- pinhole Jacobian evaluated at the mean, with the mean's x/z and y/z clamped to 1.3x the field of view so
  Gaussians far outside the image do not blow up;
- a 0.3 px^2 low-pass added to the 2D covariance (eps2d);
- radius = ceil(extend * sqrt(diag(cov2d))) with extend = min(3.33, sqrt(2 ln(255 opacity))), and Gaussians
  with opacity < 1/255, behind the near plane, beyond the far plane or off the image get radius 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0


@dataclass
class Projection:
    means2d: Tensor  # [C, N, 2] pixel coordinates (pixel centres at +0.5)
    conics: Tensor  # [C, N, 3] inverse 2D covariance (a, b, c): [[a, b], [b, c]]
    depths: Tensor  # [C, N] camera-space z
    radii: Tensor  # [C, N, 2] int32 screen-space half extents; 0 = culled
    cov2d: Tensor  # [C, N, 3] 2D covariance with the low-pass (xx, xy, yy)


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """wxyz quaternions [N, 4] (any norm) -> rotation matrices [N, 3, 3]."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z),
        2 * (x * y - w * z),
        2 * (x * z + w * y),
        2 * (x * y + w * z),
        1 - 2 * (x * x + z * z),
        2 * (y * z - w * x),
        2 * (x * z - w * y),
        2 * (y * z + w * x),
        1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(*quats.shape[:-1], 3, 3)


def covariance_factor(quats: Tensor, scales: Tensor) -> Tensor:
    """M = R S with covariance = M M^T; quats [N, 4] wxyz, scales [N, 3] linear -> [N, 3, 3]."""
    return quat_to_rotmat(quats) * scales[..., None, :]


def project(
    means: Tensor,  # [N, 3] world
    quats: Tensor,  # [N, 4] wxyz
    scales: Tensor,  # [N, 3] linear (not log)
    viewmats: Tensor,  # [C, 4, 4] world-to-camera
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    opacities: Tensor | None = None,  # [N] linear; None -> fixed 3.33-sigma extent, no opacity culling
    eps2d: float = 0.3,
    near: float = 0.01,
    far: float = 1e10,
) -> Projection:
    """Project every Gaussian into every camera; gradients flow to means, quats and scales."""
    R = viewmats[:, :3, :3]  # [C, 3, 3]
    t = viewmats[:, :3, 3]  # [C, 3]
    means_c = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]  # [C, N, 3]
    tx, ty, tz = means_c.unbind(-1)  # [C, N]

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    # Clamp the point used for the Jacobian to 1.3x the frustum (gsplat's 0.3 * tan(fov/2) margin).
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    rz = 1.0 / tz
    jx = tz * torch.clamp(tx * rz, min=-lim_x_neg, max=lim_x_pos)
    jy = tz * torch.clamp(ty * rz, min=-lim_y_neg, max=lim_y_pos)

    # Rows of J W (2x3 per camera and Gaussian): J = [[fx/z, 0, -fx x/z^2], [0, fy/z, -fy y/z^2]].
    rz2 = rz * rz
    j00, j02 = fx * rz, -fx * jx * rz2  # [C, N]
    j11, j12 = fy * rz, -fy * jy * rz2
    row0 = j00[..., None] * R[:, None, 0, :] + j02[..., None] * R[:, None, 2, :]  # [C, N, 3]
    row1 = j11[..., None] * R[:, None, 1, :] + j12[..., None] * R[:, None, 2, :]

    M = covariance_factor(quats, scales)  # [N, 3, 3]
    a0 = torch.einsum("cnj,njk->cnk", row0, M)  # [C, N, 3] row of J W M
    a1 = torch.einsum("cnj,njk->cnk", row1, M)
    cxx = (a0 * a0).sum(-1) + eps2d
    cxy = (a0 * a1).sum(-1)
    cyy = (a1 * a1).sum(-1) + eps2d
    det = (cxx * cyy - cxy * cxy).clamp_min(1e-10)
    inv_det = 1.0 / det
    conics = torch.stack([cyy * inv_det, -cxy * inv_det, cxx * inv_det], dim=-1)

    means2d = torch.stack([fx * tx * rz + cx, fy * ty * rz + cy], dim=-1)  # [C, N, 2]

    with torch.no_grad():
        extend = torch.full_like(tz, 3.33)
        valid = (tz > near) & (tz < far)
        if opacities is not None:
            op = opacities.detach()[None, :].expand_as(tz)
            valid &= op >= ALPHA_THRESHOLD
            extend = torch.minimum(extend, torch.sqrt(2.0 * torch.log(op.clamp_min(ALPHA_THRESHOLD) * 255.0)))
        rad_x = torch.ceil(extend * torch.sqrt(cxx.detach()))
        rad_y = torch.ceil(extend * torch.sqrt(cyy.detach()))
        m2 = means2d.detach()
        valid &= (m2[..., 0] + rad_x > 0) & (m2[..., 0] - rad_x < width)
        valid &= (m2[..., 1] + rad_y > 0) & (m2[..., 1] - rad_y < height)
        valid &= torch.isfinite(rad_x) & torch.isfinite(rad_y)
        radii = torch.stack([rad_x, rad_y], dim=-1).where(valid[..., None], 0.0).to(torch.int32)

    return Projection(
        means2d=means2d,
        conics=conics,
        depths=tz,
        radii=radii,
        cov2d=torch.stack([cxx, cxy, cyy], dim=-1),
    )


def camera_centres(viewmats: Tensor) -> Tensor:
    """World-space camera centres [C, 3] of world-to-camera matrices [C, 4, 4]."""
    return torch.linalg.inv(viewmats)[:, :3, 3]
