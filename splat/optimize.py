"""Optimising Gaussians against posed views: L1 + D-SSIM, Adam per parameter group, optional trainable subset.

A fresh optimiser is made for each call, so a run resumed from a checkpoint after view k continues exactly
as an uninterrupted run would (no hidden optimiser moments to lose).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from engine.cameras import Camera
from splat.gaussians import Gaussians
from splat.losses import photometric_loss


@dataclass
class TrainView:
    camera: Camera
    image: Tensor  # [H, W, 3] float in [0, 1]
    mask: Tensor | None = None  # [H, W] bool, pixels the loss may trust (None: all)


@dataclass(frozen=True)
class LearningRates:
    means: float = 1.6e-4  # multiplied by the scene extent
    scales: float = 5e-3
    quats: float = 1e-3
    opacities: float = 2.5e-2
    sh0: float = 2.5e-3
    shN: float = 1.25e-4


def scene_extent(gaussians: Gaussians) -> float:
    """A length scale of the scene (median distance of the means from their centroid), for position lrs."""
    if len(gaussians) == 0:
        return 1.0
    means = gaussians.means.detach()
    return float((means - means.mean(0)).norm(dim=-1).median().clamp_min(1e-3))


def make_optimizers(gaussians: Gaussians, lrs: LearningRates, extent: float) -> dict[str, torch.optim.Adam]:
    """One Adam per parameter (gsplat strategies expect this layout)."""
    rates = {
        "means": lrs.means * extent,
        "scales": lrs.scales,
        "quats": lrs.quats,
        "opacities": lrs.opacities,
        "sh0": lrs.sh0,
        "shN": lrs.shN,
    }
    return {key: torch.optim.Adam([gaussians.params[key]], lr=lr, eps=1e-15) for key, lr in rates.items()}


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


def _scaled_view(view: TrainView, scale: float) -> TrainView:
    if scale == 1.0:
        return view
    cam = view.camera
    w, h = max(8, round(cam.width * scale)), max(8, round(cam.height * scale))
    img = F.interpolate(view.image.permute(2, 0, 1)[None], size=(h, w), mode="area")[0].permute(1, 2, 0)
    mask = None
    if view.mask is not None:
        mask = F.interpolate(view.mask[None, None].float(), size=(h, w), mode="area")[0, 0] > 0.999
    return TrainView(cam.scaled(w, h), img, mask)


def optimize(
    gaussians: Gaussians,
    views: Sequence[TrainView],
    steps: int,
    *,
    lrs: LearningRates | None = None,
    ssim_weight: float = 0.2,
    resolution_scale: float = 1.0,
    trainable: Tensor | None = None,  # [N] bool: only these Gaussians change (None: all)
    view_weights: Sequence[float] | None = None,  # sampling probability per view (None: uniform)
    seed: int = 0,
    background: Tensor | None = None,  # [3]
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Run `steps` Adam steps, each on one view drawn with `view_weights`; returns the loss per step."""
    from splat.render import render_camera

    if steps <= 0 or len(gaussians) == 0 or not views:
        return []
    views = [_scaled_view(v, resolution_scale) for v in views]
    optimizers = make_optimizers(gaussians, lrs or LearningRates(), scene_extent(gaussians))
    rng = np.random.default_rng(seed)
    probs = None
    if view_weights is not None:
        probs = np.asarray(view_weights, dtype=np.float64)
        probs = probs / probs.sum()
    frozen = None if trainable is None else ~trainable.to(gaussians.device)
    losses: list[float] = []
    for step in range(steps):
        view = views[int(rng.choice(len(views), p=probs))]
        out = render_camera(gaussians, view.camera, background=background)
        loss = photometric_loss(out.rgb[0], view.image, view.mask, ssim_weight)
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        if frozen is not None and frozen.any():
            for param in gaussians.params.values():
                if param.grad is not None:
                    param.grad[frozen] = 0.0
        for opt in optimizers.values():
            opt.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step, losses[-1])
    return losses
