"""Slow, obvious reference renderer for tests: every Gaussian against every pixel, plain torch autograd.

Projection and SH come from gsplat's pure-PyTorch reference (`gsplat/cuda/_torch_impl.py`, private API, used
only here), so the reference shares no code with splat/projection.py, splat/sh.py or splat/cpu/raster.py.
No tiles, no bounding boxes: a pixel's alpha from a Gaussian is computed everywhere, and the compositing
rule is written out directly (gsplat's: skip sigma < 0 or alpha < 1/255, clamp alpha at 0.999, stop a pixel
before its transmittance would drop to <= 1e-4).
"""

from __future__ import annotations

import math

import torch
from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci, _spherical_harmonics
from torch import Tensor

from splat.gaussians import Gaussians

W, H = 32, 24


def random_scene(seed: int, n: int = 50, sh_degree: int = 3, dtype=torch.float64) -> Gaussians:
    """Gaussians mostly in front of both cameras, a few off-screen, one behind the near plane."""
    g = torch.Generator().manual_seed(seed)
    u = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64)  # noqa: E731
    means = torch.stack([u(n) * 3.0 - 1.5, u(n) * 2.4 - 1.2, u(n) * 2.0 + 2.0], dim=-1)
    means[0] = torch.tensor([0.1, 0.0, -1.0])  # behind the camera
    means[1] = torch.tensor([6.0, 0.0, 3.0])  # far off to the side
    k = (sh_degree + 1) ** 2 - 1
    params = {
        "means": means,
        "scales": torch.log(0.05 + 0.35 * u(n, 3)),
        "quats": torch.randn(n, 4, generator=g, dtype=torch.float64),
        "opacities": u(n) * 8.0 - 2.0,
        "sh0": torch.randn(n, 1, 3, generator=g, dtype=torch.float64),
        "shN": 0.3 * torch.randn(n, k, 3, generator=g, dtype=torch.float64),
    }
    return Gaussians(params).to(dtype)


def two_cameras(dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    a = math.radians(12.0)
    rot = torch.tensor([[math.cos(a), 0.0, -math.sin(a)], [0.0, 1.0, 0.0], [math.sin(a), 0.0, math.cos(a)]])
    second = torch.eye(4)
    second[:3, :3] = rot
    second[:3, 3] = torch.tensor([0.2, -0.1, 0.3])
    viewmats = torch.stack([torch.eye(4), second]).to(dtype)
    K = torch.tensor([[30.0, 0.0, 16.0], [0.0, 28.0, 12.5], [0.0, 0.0, 1.0]], dtype=dtype)
    return viewmats, torch.stack([K, K])


def dense_render(
    params: dict[str, Tensor],
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    sh_degree: int,
    background: Tensor | None = None,  # [3]
    near: float = 0.01,
) -> tuple[Tensor, Tensor, Tensor]:
    """-> rgb [C, H, W, 3], expected depth [C, H, W, 1], alpha [C, H, W, 1]."""
    means, quats = params["means"], params["quats"]
    scales, opac = torch.exp(params["scales"]), torch.sigmoid(params["opacities"])
    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    _, means2d, depths, conics, _ = _fully_fused_projection(
        means, covars, viewmats, Ks, width, height, near_plane=near
    )
    campos = torch.linalg.inv(viewmats)[:, :3, 3]
    coeffs = torch.cat([params["sh0"], params["shN"]], dim=1)
    C = depths.shape[0]
    dirs = means[None] - campos[:, None]
    rgb = _spherical_harmonics(sh_degree, dirs, coeffs[None].expand(C, -1, -1, -1))
    rgb = torch.clamp_min(rgb + 0.5, 0.0)  # [C, N, 3]

    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=means.dtype) + 0.5,
        torch.arange(width, dtype=means.dtype) + 0.5,
        indexing="ij",
    )
    images, depth_maps, alphas = [], [], []
    for c in range(C):
        T = torch.ones(height, width, dtype=means.dtype)
        done = torch.zeros(height, width, dtype=torch.bool)
        color = torch.zeros(height, width, 3, dtype=means.dtype)
        depth = torch.zeros(height, width, dtype=means.dtype)
        for g in torch.argsort(depths[c], stable=True).tolist():
            if not (depths[c, g] > near):
                continue
            dx = means2d[c, g, 0] - xs
            dy = means2d[c, g, 1] - ys
            a, b, cc = conics[c, g]
            sigma = 0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy
            alpha = torch.clamp_max(opac[g] * torch.exp(-sigma), 0.999)
            use = (sigma >= 0) & (alpha >= 1.0 / 255.0) & ~done
            next_T = T * (1.0 - alpha)
            stop = use & (next_T <= 1e-4)
            done = done | stop
            use = use & ~stop
            w = torch.where(use, alpha * T, 0.0)
            color = color + w[..., None] * rgb[c, g]
            depth = depth + w * depths[c, g]
            T = torch.where(use, next_T, T)
        acc = 1.0 - T
        if background is not None:
            color = color + T[..., None] * background
        images.append(color)
        depth_maps.append((depth / acc.clamp_min(1e-10))[..., None])
        alphas.append(acc[..., None])
    return torch.stack(images), torch.stack(depth_maps), torch.stack(alphas)
