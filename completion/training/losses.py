"""Training losses: scale-invariant log loss against the target + MSE on the known (sparse input) pixels.

Both are computed per sample and then averaged over the batch, so the loss of a batch split across DDP
ranks (equal shares) averages to exactly the loss of the whole batch on one process.
`pooled=True` is the release's form (`recipe: release`): SILog over all valid pixels of the batch at once,
and the known-pixel MSE as the mean over all pixels of (pred - sparse)^2 x mask. Under DDP the release pools
per rank (each rank's loss sees its own share), and so does this.
"""

from __future__ import annotations

import torch
from torch import Tensor


def silog_loss(
    pred: Tensor,  # [B, 1, H, W] metres, > 0
    target: Tensor,  # [B, 1, H, W] metres
    valid: Tensor,  # [B, 1, H, W] {0, 1}
    lam: float = 0.85,
    scale: float = 10.0,
    eps: float = 1e-6,
) -> Tensor:  # [B]
    """ZoeDepth's SILog: scale * sqrt(E[g^2] - lam * E[g]^2), g = log pred - log target over valid pixels."""
    v = valid.flatten(1).to(pred.dtype)
    n = v.sum(1).clamp_min(1.0)
    g = (torch.log(pred.clamp_min(eps)) - torch.log(target.clamp_min(eps))).flatten(1) * v
    mean = g.sum(1) / n
    mean_sq = (g * g).sum(1) / n
    d = (mean_sq - lam * mean * mean).clamp_min(eps)
    return scale * torch.sqrt(d) * (v.sum(1) > 0).to(pred.dtype)


def known_mse_loss(
    pred: Tensor,  # [B, 1, H, W]
    sparse: Tensor,  # [B, 1, H, W] the known depth given as input
    known: Tensor,  # [B, 1, H, W] {0, 1}
) -> Tensor:  # [B] (0 for samples without known pixels)
    k = known.flatten(1).to(pred.dtype)
    se = ((pred - sparse).flatten(1) ** 2) * k
    return se.sum(1) / k.sum(1).clamp_min(1.0)


def completion_loss(
    pred: Tensor,
    batch: dict[str, Tensor],
    w_silog: float = 1.0,
    w_known: float = 1.0,
    lam: float = 0.85,
    pooled: bool = False,
) -> tuple[Tensor, dict[str, float]]:
    """Batch mean of w_silog * SILog + w_known * known-pixel MSE; also the parts for logging."""
    if pooled:  # the release: one SILog over the batch's pixels, MSE averaged over all pixels
        si = silog_loss(
            pred.reshape(1, 1, -1, 1),
            batch["target"].reshape(1, 1, -1, 1),
            batch["valid"].reshape(1, 1, -1, 1),
            lam=lam,
        )
        k = batch["known"].to(pred.dtype)
        mse = (((pred - batch["sparse"]) ** 2) * k).mean().reshape(1)
    else:
        si = silog_loss(pred, batch["target"], batch["valid"], lam=lam)
        mse = known_mse_loss(pred, batch["sparse"], batch["known"])
    loss = (w_silog * si + w_known * mse).mean()
    return loss, {"silog": float(si.mean().detach()), "known_mse": float(mse.mean().detach())}
