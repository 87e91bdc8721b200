"""Per-view pose refinement: a small learnable se(3) correction applied on the left of each world-to-camera.

w2c' = exp(delta_i) @ w2c_i with delta_i = (rotation vector [3], translation [3]) starting at zero, so the
corrected camera equals the original until the optimiser moves it. The anchor view (the photo) stays fixed:
otherwise every camera and the whole scene could drift together.
"""

from __future__ import annotations

import torch
from torch import Tensor


def so3_exp(omega: Tensor) -> Tensor:
    """Rotation vector [3] -> rotation matrix [3, 3] (Rodrigues; Taylor terms near zero keep gradients)."""
    theta2 = (omega * omega).sum()
    theta = torch.sqrt(theta2.clamp_min(1e-12))
    small = theta2 < 1e-8
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2.clamp_min(1e-12))
    x, y, z = omega.unbind()
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero]).reshape(3, 3)
    return torch.eye(3, dtype=omega.dtype, device=omega.device) + a * K + b * (K @ K)


class PoseDeltas(torch.nn.Module):
    """One se(3) delta per view; `anchor` (or None) names a view whose pose never changes."""

    def __init__(self, n_views: int, anchor: int | None = 0, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.delta = torch.nn.Parameter(torch.zeros(n_views, 6, device=device))  # [V, 6]
        self.anchor = anchor

    def forward(self, index: int, viewmat: Tensor) -> Tensor:
        """Corrected world-to-camera [4, 4] of view `index` from its original `viewmat` [4, 4]."""
        if index == self.anchor:
            return viewmat
        d = self.delta[index]
        T = torch.eye(4, dtype=viewmat.dtype, device=viewmat.device)
        T = torch.cat([torch.cat([so3_exp(d[:3]), d[3:, None]], dim=1), T[3:]], dim=0)
        return T.to(viewmat.dtype) @ viewmat

    def magnitudes(self) -> list[tuple[float, float]]:
        """Per view: (rotation in degrees, translation length) of the current correction."""
        d = self.delta.detach()
        rot = torch.rad2deg(d[:, :3].norm(dim=-1))
        return [
            (round(float(r), 4), round(float(t), 6)) for r, t in zip(rot, d[:, 3:].norm(dim=-1), strict=True)
        ]
