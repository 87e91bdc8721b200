"""Photometric losses: masked L1 and D-SSIM (Gaussian window 11, sigma 1.5, as in 3DGS)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _gaussian_window(size: int = 11, sigma: float = 1.5, device=None, dtype=None) -> Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g


def ssim_map(img1: Tensor, img2: Tensor, size: int = 11, sigma: float = 1.5) -> Tensor:
    """Per-pixel SSIM of two images [B, 3, H, W] in [0, 1] -> [B, 3, H, W] (same padding)."""
    c = img1.shape[1]
    g = _gaussian_window(size, sigma, img1.device, img1.dtype)
    kx = g.view(1, 1, 1, size).repeat(c, 1, 1, 1)
    ky = g.view(1, 1, size, 1).repeat(c, 1, 1, 1)

    def blur(x: Tensor) -> Tensor:
        x = F.conv2d(F.pad(x, (size // 2, size // 2, 0, 0), mode="replicate"), kx, groups=c)
        return F.conv2d(F.pad(x, (0, 0, size // 2, size // 2), mode="replicate"), ky, groups=c)

    mu1, mu2 = blur(img1), blur(img2)
    s11 = blur(img1 * img1) - mu1 * mu1
    s22 = blur(img2 * img2) - mu2 * mu2
    s12 = blur(img1 * img2) - mu1 * mu2
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 * mu1 + mu2 * mu2 + c1) * (s11 + s22 + c2))


def photometric_loss(
    pred: Tensor,  # [H, W, 3]
    target: Tensor,  # [H, W, 3]
    mask: Tensor | None = None,  # [H, W] bool, pixels that count
    ssim_weight: float = 0.2,
) -> Tensor:
    """(1 - w) * L1 + w * (1 - SSIM), averaged over the masked pixels."""
    weight = torch.ones(pred.shape[:2], device=pred.device) if mask is None else mask.float()
    denom = weight.sum().clamp_min(1.0)
    l1 = ((pred - target).abs().mean(-1) * weight).sum() / denom
    if ssim_weight == 0:
        return l1
    s = ssim_map(pred.permute(2, 0, 1)[None], target.permute(2, 0, 1)[None])[0].mean(0)
    dssim = ((1 - s) * weight).sum() / denom
    return (1 - ssim_weight) * l1 + ssim_weight * dssim


def psnr(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> float:
    """PSNR in dB of [H, W, 3] images in [0, 1] over the masked pixels."""
    err = (pred - target).pow(2).mean(-1)
    mse = err.mean() if mask is None else err[mask].mean()
    return float(-10.0 * torch.log10(mse.clamp_min(1e-10)))
