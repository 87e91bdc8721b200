"""The Gaussian set: one ParameterDict in gsplat's layout, seeding from points, extend and prune.

Parameters are stored under gsplat's own keys so that gsplat strategies (DefaultStrategy, MCMCStrategy)
work on them directly on CUDA:

    means      [N, 3]     world positions
    scales     [N, 3]     natural log of the standard deviations
    quats      [N, 4]     rotations, (w, x, y, z), not necessarily normalised
    opacities  [N]        logits of opacity
    sh0        [N, 1, 3]  degree-0 SH coefficient (colour = 0.5 + SH_C0 * sh0)
    shN        [N, K, 3]  higher SH coefficients, K = (degree + 1)^2 - 1 (K = 0 for degree 0)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

SH_C0 = 0.28209479177387814
PARAM_KEYS = ("means", "scales", "quats", "opacities", "sh0", "shN")


def num_sh_rest(sh_degree: int) -> int:
    """Number of SH coefficients beyond the DC term for a degree in 0..3."""
    if not 0 <= sh_degree <= 3:
        raise ValueError(f"SH degree must be 0..3, got {sh_degree}")
    return (sh_degree + 1) ** 2 - 1


def sh_degree_from_rest(k: int) -> int:
    """Inverse of num_sh_rest: the degree whose rest-coefficient count is k."""
    for degree in range(4):
        if num_sh_rest(degree) == k:
            return degree
    raise ValueError(f"{k} higher SH coefficients match no SH degree 0..3")


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    """rgb [..., 3] in [0, 1] -> DC coefficient [..., 3]."""
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: Tensor) -> Tensor:
    """DC coefficient [..., 3] -> rgb [..., 3] (unclamped)."""
    return sh0 * SH_C0 + 0.5


def knn_mean_distance(points: np.ndarray, k: int = 3, rms: bool = False) -> np.ndarray:
    """Mean distance of each point [N, 3] to its k nearest other points -> [N].

    rms: the root of the mean squared distance instead (the release's INRIA seeding: sqrt(distCUDA2))."""
    n = len(points)
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    if n == 1:
        return np.full(1, 0.01)
    k_eff = min(k, n - 1)
    dist, _ = cKDTree(points).query(points, k=k_eff + 1)
    if rms:
        return np.sqrt((dist[:, 1:] ** 2).mean(axis=1))
    return dist[:, 1:].mean(axis=1)


class Gaussians(torch.nn.Module):
    """A set of 3D Gaussians; `params` is the ParameterDict that optimisers and strategies act on."""

    def __init__(self, params: Mapping[str, Tensor], sh_degree: int | None = None) -> None:
        super().__init__()
        missing = [k for k in PARAM_KEYS if k not in params]
        if missing:
            raise ValueError(f"Gaussians needs parameters {missing}")
        n = params["means"].shape[0]
        expected = {
            "means": (n, 3),
            "scales": (n, 3),
            "quats": (n, 4),
            "opacities": (n,),
            "sh0": (n, 1, 3),
        }
        for key, shape in expected.items():
            if tuple(params[key].shape) != shape:
                raise ValueError(f"{key} has shape {tuple(params[key].shape)}, expected {shape}")
        shn = params["shN"]
        if shn.ndim != 3 or shn.shape[0] != n or shn.shape[2] != 3:
            raise ValueError(f"shN has shape {tuple(shn.shape)}, expected ({n}, K, 3)")
        degree = sh_degree_from_rest(shn.shape[1])
        if sh_degree is not None and sh_degree != degree:
            raise ValueError(f"shN holds degree {degree}, not {sh_degree}")
        self.sh_degree = degree
        self.params = torch.nn.ParameterDict(
            {k: torch.nn.Parameter(params[k].detach().clone().float()) for k in PARAM_KEYS}
        )

    # --- construction -------------------------------------------------------------------------------
    @classmethod
    def empty(cls, sh_degree: int = 3, device: torch.device | str = "cpu") -> Gaussians:
        k = num_sh_rest(sh_degree)
        z = lambda *s: torch.zeros(*s, device=device)  # noqa: E731
        return cls(
            {
                "means": z(0, 3),
                "scales": z(0, 3),
                "quats": z(0, 4),
                "opacities": z(0),
                "sh0": z(0, 1, 3),
                "shN": z(0, k, 3),
            }
        )

    @classmethod
    def from_points(
        cls,
        points: np.ndarray | Tensor,  # [N, 3] world positions
        colors: np.ndarray | Tensor,  # [N, 3] rgb in [0, 1]
        sh_degree: int = 3,
        opacity: float = 0.95,
        scale_factor: float = 1.0,
        min_scale: float = 1e-4,
        device: torch.device | str = "cpu",
        scale_rule: str = "mean",
    ) -> Gaussians:
        """One isotropic Gaussian per point, sized by the mean ("mean") or RMS ("rms", the release) distance
        to its 3 nearest neighbours, times scale_factor."""
        if scale_rule not in ("mean", "rms"):
            raise ValueError(f"scale_rule must be 'mean' or 'rms', got {scale_rule!r}")
        pts = np.asarray(points.detach().cpu() if isinstance(points, Tensor) else points, dtype=np.float64)
        cols = np.asarray(colors.detach().cpu() if isinstance(colors, Tensor) else colors, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3 or cols.shape != pts.shape:
            raise ValueError(f"points {pts.shape} and colors {cols.shape} must both be [N, 3]")
        n = len(pts)
        scale = np.maximum(knn_mean_distance(pts, rms=scale_rule == "rms") * scale_factor, min_scale)
        log_scale = torch.from_numpy(np.log(scale)).float()[:, None].repeat(1, 3)
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1.0
        logit = float(np.log(opacity / (1.0 - opacity)))
        rgb = torch.from_numpy(np.clip(cols, 0.0, 1.0)).float()
        params = {
            "means": torch.from_numpy(pts).float(),
            "scales": log_scale,
            "quats": quats,
            "opacities": torch.full((n,), logit),
            "sh0": rgb_to_sh0(rgb)[:, None, :],
            "shN": torch.zeros(n, num_sh_rest(sh_degree), 3),
        }
        return cls({k: v.to(device) for k, v in params.items()})

    # --- views --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.params["means"].shape[0])

    @property
    def device(self) -> torch.device:
        return self.params["means"].device

    @property
    def means(self) -> Tensor:
        return self.params["means"]

    def scales_linear(self) -> Tensor:  # [N, 3]
        return torch.exp(self.params["scales"])

    def opacities_linear(self) -> Tensor:  # [N]
        return torch.sigmoid(self.params["opacities"])

    def quats_normalised(self) -> Tensor:  # [N, 4] wxyz
        return torch.nn.functional.normalize(self.params["quats"], dim=-1)

    def sh_coeffs(self) -> Tensor:  # [N, (degree+1)^2, 3]
        return torch.cat([self.params["sh0"], self.params["shN"]], dim=1)

    def rgb(self) -> Tensor:  # [N, 3] view-independent colour in [0, 1]
        return sh0_to_rgb(self.params["sh0"][:, 0]).clamp(0.0, 1.0)

    def tensors(self) -> dict[str, Tensor]:
        """Detached copies of every parameter (for saving, checkpoints and viewers)."""
        return {k: v.detach().clone() for k, v in self.params.items()}

    def clone(self) -> Gaussians:
        return Gaussians(self.tensors())

    # --- editing that keeps optimisers consistent ---------------------------------------------------
    def extend(self, other: Gaussians, optimizers: Mapping[str, torch.optim.Optimizer] | None = None) -> None:
        """Append `other`'s Gaussians; new optimiser moments for them start at zero."""
        if other.sh_degree != self.sh_degree:
            raise ValueError(f"cannot extend degree {self.sh_degree} Gaussians with degree {other.sh_degree}")
        n_new = len(other)
        self._replace(
            lambda key, p: torch.cat([p, other.params[key].detach().to(p.device)], dim=0),
            lambda key, state: torch.cat(
                [state, torch.zeros((n_new, *state.shape[1:]), dtype=state.dtype, device=state.device)]
            ),
            optimizers,
        )

    def prune(self, keep: Tensor, optimizers: Mapping[str, torch.optim.Optimizer] | None = None) -> None:
        """Keep only Gaussians where `keep` [N] (bool) is True, optimiser moments included."""
        if keep.dtype != torch.bool or keep.shape != (len(self),):
            raise ValueError(f"keep must be a bool mask of shape ({len(self)},)")
        keep = keep.to(self.device)
        self._replace(lambda key, p: p[keep], lambda key, state: state[keep], optimizers)

    def _replace(self, param_fn, state_fn, optimizers) -> None:
        """Swap every parameter for param_fn(key, old) and remap its optimiser state with state_fn."""
        for key in PARAM_KEYS:
            old = self.params[key]
            new = torch.nn.Parameter(param_fn(key, old.detach()), requires_grad=old.requires_grad)
            if optimizers is not None and key in optimizers:
                opt = optimizers[key]
                for group in opt.param_groups:
                    for i, p in enumerate(group["params"]):
                        if p is not old:
                            continue
                        state = opt.state.pop(p, None)
                        if state is not None:
                            for name, value in state.items():
                                if isinstance(value, Tensor) and value.ndim > 0 and value.shape == old.shape:
                                    state[name] = state_fn(key, value)
                            opt.state[new] = state
                        group["params"][i] = new
            self.params[key] = new
