"""Which Gaussians a camera can see, and the subset of a Gaussian set that a CPU training step renders."""

from __future__ import annotations

import torch
from torch import Tensor

from splat.cameras import Camera
from splat.gaussians import PARAM_KEYS, Gaussians, num_sh_rest


def visible_in(camera: Camera, means: Tensor, margin: float = 0.1) -> Tensor:
    """Which means [N, 3] project inside the camera's image (with a relative margin) in front of it -> [N]."""
    w2c = torch.as_tensor(camera.world_to_camera, dtype=means.dtype, device=means.device)
    K = torch.as_tensor(camera.K, dtype=means.dtype, device=means.device)
    cam = means @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    uv = (cam @ K.T)[:, :2] / z.clamp_min(1e-6)[:, None]
    mw, mh = margin * camera.width, margin * camera.height
    return (
        (z > 1e-3)
        & (uv[:, 0] > -mw)
        & (uv[:, 0] < camera.width + mw)
        & (uv[:, 1] > -mh)
        & (uv[:, 1] < camera.height + mh)
    )


@torch.no_grad()
def reaching_view(
    viewmat: Tensor,  # [4, 4]
    K: Tensor,  # [3, 3]
    width: int,
    height: int,
    means: Tensor,  # [N, 3]
    log_scales: Tensor,  # [N, 3]
    near: float = 0.01,
) -> Tensor:
    """Indices [M] of the Gaussians whose 3.33-sigma footprint can touch the image (conservative: the
    footprint bound uses the largest axis, the 0.3 px low-pass and 2 px slack)."""
    cam = means @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = cam[:, 2]
    zc = z.clamp_min(near)
    f = torch.maximum(K[0, 0], K[1, 1])
    sigma_px = torch.exp(log_scales).max(dim=-1).values * f / zc
    reach = 3.5 * torch.sqrt(sigma_px * sigma_px + 0.3) * 1.5 + 2.0
    u = K[0, 0] * cam[:, 0] / zc + K[0, 2]
    v = K[1, 1] * cam[:, 1] / zc + K[1, 2]
    ok = (z > near) & (u + reach > 0) & (u - reach < width) & (v + reach > 0) & (v - reach < height)
    return torch.nonzero(ok).squeeze(1)


class GaussianSubset:
    """The rows `ids` of a Gaussian set at SH degree `degree`, duck-typed for splat.render.render:
    gradients flow back into the full parameters through the indexing."""

    def __init__(self, gaussians: Gaussians, ids: Tensor, degree: int) -> None:
        p = gaussians.params
        k = num_sh_rest(degree)
        self.params = {key: p[key][ids] for key in PARAM_KEYS if key != "shN"}
        # Coefficients above the active degree stay out of the graph: no gradient, no Adam work for them.
        self.params["shN"] = p["shN"][ids, :k] if k > 0 else p["shN"].detach()[ids, :0]
        self.sh_degree = degree
        self.device = gaussians.device

    def __len__(self) -> int:
        return int(self.params["means"].shape[0])
