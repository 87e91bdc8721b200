"""Learning rates and schedules of the Gaussian optimisation, and the per-parameter Adams built from them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from splat.gaussians import Gaussians


@dataclass(frozen=True)
class LearningRates:
    means: float = 1.6e-4  # multiplied by the scene extent
    scales: float = 5e-3
    quats: float = 1e-3
    opacities: float = 2.5e-2
    sh0: float = 2.5e-3
    shN: float = 1.25e-4
    pose: float = 1e-4  # per-view se(3) deltas (radians / scene units)


@dataclass(frozen=True)
class Schedule:
    means_final_ratio: float | None = None  # means lr decays exponentially to this fraction (None: constant)
    sh_degree_interval: int | None = None  # active SH degree +1 every this many steps (None: full degree)


def scene_extent(gaussians: Gaussians) -> float:
    """A length scale of the scene (median distance of the means from their centroid), for position lrs."""
    if len(gaussians) == 0:
        return 1.0
    means = gaussians.means.detach()
    return float((means - means.mean(0)).norm(dim=-1).median().clamp_min(1e-3))


def base_rates(lrs: LearningRates, extent: float) -> dict[str, float]:
    return {
        "means": lrs.means * extent,
        "scales": lrs.scales,
        "quats": lrs.quats,
        "opacities": lrs.opacities,
        "sh0": lrs.sh0,
        "shN": lrs.shN,
    }


def make_optimizers(gaussians: Gaussians, lrs: LearningRates, extent: float) -> dict[str, torch.optim.Adam]:
    """One Adam per parameter (gsplat strategies expect this layout)."""
    return {
        key: torch.optim.Adam([gaussians.params[key]], lr=lr, eps=1e-15)
        for key, lr in base_rates(lrs, extent).items()
    }
