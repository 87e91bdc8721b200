"""Regularisers for refinement: depth agreement, needle-shaped Gaussians, floaters.

- depth_loss: L1 between the log of the rendered expected depth and the log of the completed depth map, on
  trusted pixels the render covers (alpha > 0.5). Log depth weighs near and far surfaces alike, so geometry
  stays where depth completion put it while colours sharpen.
- scale_ratio_penalty: mean of relu(largest / smallest axis - max_ratio) (PhysGaussian's anisotropy term):
  needles that look right from the generation cameras and streak from everywhere else.
- opacity_penalty: mean opacity (3DGS-MCMC's L1): Gaussians the images do not need fade out and get
  pruned, which removes semi-transparent floaters between surfaces and the camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Regularization:
    depth_weight: float = 0.0  # weight of depth_loss (0: off)
    scale_ratio_weight: float = 0.0  # weight of scale_ratio_penalty (0: off)
    max_scale_ratio: float = 10.0
    opacity_weight: float = 0.0  # weight of opacity_penalty (0: off)

    @property
    def any_gaussian_term(self) -> bool:
        return self.scale_ratio_weight > 0 or self.opacity_weight > 0


def depth_loss(
    depth: Tensor,  # [H, W] rendered expected depth
    alpha: Tensor,  # [H, W] rendered alpha
    target: Tensor,  # [H, W] completed depth (metres, > 0 where valid)
    mask: Tensor | None = None,  # [H, W] bool, trusted pixels
) -> Tensor:
    """Mean |log depth - log target| over trusted, covered pixels with a valid target (0 if none)."""
    valid = (alpha.detach() > 0.5) & (target > 0) & (depth.detach() > 0)
    if mask is not None:
        valid &= mask
    if not bool(valid.any()):
        return depth.sum() * 0.0
    return (torch.log(depth[valid].clamp_min(1e-6)) - torch.log(target[valid])).abs().mean()


def scale_ratio_penalty(log_scales: Tensor, max_ratio: float = 10.0) -> Tensor:
    """log_scales [N, 3] -> mean relu(max/min axis - max_ratio)."""
    if log_scales.shape[0] == 0:
        return log_scales.sum()
    s = torch.exp(log_scales)
    ratio = s.max(dim=-1).values / s.min(dim=-1).values.clamp_min(1e-12)
    return torch.relu(ratio - max_ratio).mean()


def opacity_penalty(opacity_logits: Tensor) -> Tensor:
    """opacity logits [N] -> mean opacity."""
    if opacity_logits.shape[0] == 0:
        return opacity_logits.sum()
    return torch.sigmoid(opacity_logits).mean()


def gaussian_terms(params, reg: Regularization) -> Tensor | None:
    """Weighted sum of the per-Gaussian regularisers, or None when they are all off."""
    if not reg.any_gaussian_term:
        return None
    total = params["means"].new_zeros(())
    if reg.scale_ratio_weight > 0:
        total = total + reg.scale_ratio_weight * scale_ratio_penalty(params["scales"], reg.max_scale_ratio)
    if reg.opacity_weight > 0:
        total = total + reg.opacity_weight * opacity_penalty(params["opacities"])
    return total
