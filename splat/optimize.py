"""Optimising Gaussians against posed views: L1 + D-SSIM on trusted pixels, Adam per parameter.

`optimize(...)` is what the generation loop calls after each view: a fresh `Trainer` (fresh optimisers)
per call, so a run resumed from a checkpoint after view k continues exactly as an uninterrupted run would.
With its defaults it is plain Adam on the photometric loss, as before.

`Trainer` adds what refinement needs, each optional:
- densification/pruning through a strategy with gsplat's interface (splat.strategy),
- an exponential decay of the means' learning rate and a growing active SH degree (splat.learning_rates),
- depth supervision and regularisers against needles and floaters (splat.regularize),
- per-view pose refinement (splat.pose),
- `state_dict()` / `load_state_dict()`: parameters, Adam moments, strategy statistics, pose deltas and the
  view sampler, so an interrupted refinement resumes to the same result.
On CPU each step renders only the Gaussians that can reach the view (a conservative frustum test,
splat.view_culling): the same image, about half the projection work on a yaw trajectory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from splat import render as splat_render  # the backend switch, looked up per call (tests replace it)
from splat.cameras import Camera
from splat.errors import StitchError
from splat.gaussians import PARAM_KEYS, Gaussians, num_sh_rest
from splat.learning_rates import LearningRates, Schedule, base_rates, make_optimizers, scene_extent
from splat.losses import photometric_loss
from splat.pose import PoseDeltas
from splat.regularize import Regularization, depth_loss, gaussian_terms
from splat.strategy import generator_state, is_mcmc, load_state_tensors, state_tensors, strategy_kind
from splat.train_views import TrainView, scaled_view
from splat.view_culling import GaussianSubset, reaching_view

# Smallest standard deviation a Gaussian may have, in pixels of the training view that sees it largest.
# Web viewers draw thinner splats than stitch's renderer: PlayCanvas (SuperSplat) blurs by 0.075 px^2, not
# 0.3, and drops splats drawn under 1 px; sub-pixel Gaussians that tile the image in stitch leave the
# background showing through there (benchmarks/bench_viewer_opacity.py: 6.6 % at 0.5-0.6 px sigma).
MIN_SIGMA_PX = 0.7


class Trainer:
    """Optimisation state for a run of `total_steps` steps over `views` (see the module docstring)."""

    def __init__(
        self,
        gaussians: Gaussians,
        views: Sequence[TrainView],
        total_steps: int,
        *,
        lrs: LearningRates | None = None,
        ssim_weight: float = 0.2,
        resolution_scale: float = 1.0,
        trainable: Tensor | None = None,  # [N] bool: only these Gaussians change (None: all)
        view_weights: Sequence[float] | None = None,  # sampling probability per view (None: uniform)
        seed: int = 0,
        background: Tensor | None = None,  # [3]
        strategy: Any | None = None,  # splat.strategy.make_strategy(...) or a gsplat strategy
        schedule: Schedule | None = None,
        regularization: Regularization | None = None,
        pose_refine: bool = False,
        pose_anchor: int | None = 0,
        min_sigma_px: float | None = None,  # size floor in view pixels (None: MIN_SIGMA_PX, 0: none)
    ) -> None:
        if not views:
            raise StitchError("no views to optimise against")
        if trainable is not None and strategy is not None:
            raise StitchError("a trainable mask cannot be combined with densification; pass one or the other")
        self.extent = scene_extent(gaussians)
        # On CPU only the trainable rows become parameters (their own leaf tensors) and the frozen rest is
        # rendered as a constant: Adam and gradients cost O(trainable), not O(scene), so the cost per added
        # view stays flat. On CUDA the full set renders and the frozen rows' gradients are zeroed instead.
        self._full = gaussians
        self._trainable_ids: Tensor | None = None
        self._frozen_rows: dict[str, Tensor] | None = None
        self.frozen = None
        if trainable is not None and splat_render.uses_gsplat(gaussians.device):
            self.frozen = ~trainable.to(gaussians.device)
        elif trainable is not None and not bool(trainable.all()):
            mask = trainable.to(gaussians.device)
            self._trainable_ids = torch.nonzero(mask).squeeze(1)
            frozen_ids = torch.nonzero(~mask).squeeze(1)
            gaussians = Gaussians({k: v.detach()[self._trainable_ids] for k, v in gaussians.params.items()})
            self._frozen_rows = {k: v.detach()[frozen_ids] for k, v in self._full.params.items()}
        self.gaussians = gaussians
        self.views = [scaled_view(v, resolution_scale) for v in views]
        self.total_steps = int(total_steps)
        self.lrs = lrs or LearningRates()
        self.ssim_weight = ssim_weight
        self.background = background
        self.strategy = strategy
        self.schedule = schedule or Schedule()
        self.reg = regularization or Regularization()
        self.min_sigma_px = float(MIN_SIGMA_PX if min_sigma_px is None else min_sigma_px)
        # Pixel size per unit distance of each full-resolution view (its centre and 1 / focal), for the floor.
        self._view_centres = torch.as_tensor(
            np.stack([v.camera.center for v in views]), dtype=torch.float32, device=gaussians.device
        )
        self._view_px = torch.as_tensor(
            [1.0 / float(min(v.camera.K[0, 0], v.camera.K[1, 1])) for v in views], device=gaussians.device
        )
        self.rates = base_rates(self.lrs, self.extent)
        self.optimizers = make_optimizers(gaussians, self.lrs, self.extent)
        self.rng = np.random.default_rng(seed)
        self.step = 0
        self.probs = None
        if view_weights is not None:
            probs = np.asarray(view_weights, dtype=np.float64)
            if probs.shape != (len(views),) or (probs < 0).any() or probs.sum() <= 0:
                raise StitchError(f"view_weights must be {len(views)} non-negative numbers, not all zero")
            self.probs = probs / probs.sum()
        device = gaussians.device
        self._viewmats = [
            torch.as_tensor(v.camera.world_to_camera, dtype=torch.float32, device=device) for v in self.views
        ]
        self._Ks = [torch.as_tensor(v.camera.K, dtype=torch.float32, device=device) for v in self.views]
        self.poses = None
        self.pose_optimizer = None
        if pose_refine:
            self.poses = PoseDeltas(len(self.views), pose_anchor, device)
            self.pose_optimizer = torch.optim.Adam(self.poses.parameters(), lr=self.lrs.pose)
        self.strategy_state: dict[str, Any] = {}
        if strategy is not None:
            strategy.check_sanity(gaussians.params, self.optimizers)
            if is_mcmc(strategy):
                self.strategy_state = strategy.initialize_state()
            else:
                self.strategy_state = strategy.initialize_state(scene_scale=self.extent)

    # --- schedules --------------------------------------------------------------------------------------
    def means_lr(self, step: int) -> float:
        ratio = self.schedule.means_final_ratio
        if ratio is None or self.total_steps <= 1:
            return self.rates["means"]
        t = min(step, self.total_steps - 1) / (self.total_steps - 1)
        return self.rates["means"] * ratio**t

    def sh_degree(self, step: int) -> int:
        interval = self.schedule.sh_degree_interval
        if interval is None:
            return self.gaussians.sh_degree
        return min(self.gaussians.sh_degree, step // max(1, interval))

    def clamp_scales(self) -> None:
        """Raise every axis of the trained Gaussians to min_sigma_px pixels of the view that sees them
        largest (the nearest camera), so no viewer's rasteriser leaves gaps between sub-pixel splats."""
        if self.min_sigma_px <= 0 or len(self.gaussians) == 0:
            return
        with torch.no_grad():
            means = self.gaussians.params["means"]
            dist = torch.cdist(means, self._view_centres.to(means.dtype))  # [N, C]
            floor = (dist * self._view_px.to(means.dtype)).min(dim=1).values * self.min_sigma_px
            log_floor = torch.log(floor.clamp_min(1e-12))[:, None]
            scales = self.gaussians.params["scales"]
            raised = torch.maximum(scales, log_floor)
            if self.frozen is not None:  # CUDA keeps frozen rows in the set: they stay as they are
                raised = torch.where(self.frozen[:, None], scales, raised)
            scales.copy_(raised)

    def viewmat(self, index: int) -> Tensor:
        """World-to-camera [4, 4] of view `index`, with its pose correction when pose refinement is on."""
        base = self._viewmats[index]
        return base if self.poses is None else self.poses(index, base)

    # --- one step ---------------------------------------------------------------------------------------
    def train_step(self) -> float:
        from splat.render import render

        g = self.gaussians
        step = self.step
        index = int(self.rng.choice(len(self.views), p=self.probs))
        view = self.views[index]
        cam = view.camera
        viewmat, K = self.viewmat(index), self._Ks[index]
        degree = self.sh_degree(step)
        packed = False
        ids = None
        if not splat_render.uses_gsplat(g.device) and len(g) > 0:
            ids = reaching_view(
                viewmat.detach(), K, cam.width, cam.height, g.means.detach(), g.params["scales"]
            )
            if len(ids) == 0:  # nothing reaches this view: render one (invisible) Gaussian for a loss
                ids = torch.zeros(1, dtype=torch.long)
            source = GaussianSubset(g, ids, degree)
            if self._frozen_rows is not None:
                source = self._with_frozen(source, viewmat.detach(), K, cam, degree)
            packed = True  # meta rows are the subset's; gaussian_ids maps them back
        else:
            source = g
        absgrad = bool(getattr(self.strategy, "absgrad", False))
        out = render(
            source, viewmat[None], K[None], cam.width, cam.height,
            sh_degree=degree, background=self.background, absgrad=absgrad,
        )  # fmt: skip
        info = out.meta
        if ids is not None and self._frozen_rows is None:  # strategies never run with frozen rows
            info = dict(info, gaussian_ids=ids[None].expand(out.meta["radii"].shape[:2]))
        if self.strategy is not None:
            self.strategy.step_pre_backward(g.params, self.optimizers, self.strategy_state, step, info)

        loss = photometric_loss(out.rgb[0], view.image, view.mask, self.ssim_weight)
        if self.reg.depth_weight > 0 and view.depth is not None:
            d = depth_loss(out.depth[0, ..., 0], out.alpha[0, ..., 0], view.depth, view.mask)
            loss = loss + self.reg.depth_weight * d
        extra = gaussian_terms(g.params, self.reg)
        if extra is not None:
            loss = loss + extra
        if self.strategy is not None and is_mcmc(self.strategy):
            loss = loss + mcmc_regularizers(g.params)

        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        if self.pose_optimizer is not None:
            self.pose_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.frozen is not None and self.frozen.any():
            for param in g.params.values():
                if param.grad is not None:
                    param.grad[self.frozen] = 0.0
        self.optimizers["means"].param_groups[0]["lr"] = self.means_lr(step)
        for opt in self.optimizers.values():
            opt.step()
        if self.pose_optimizer is not None:
            self.pose_optimizer.step()

        if self.strategy is not None:
            if is_mcmc(self.strategy):
                self.strategy.step_post_backward(
                    g.params, self.optimizers, self.strategy_state, step, info, lr=self.means_lr(step)
                )
            else:
                self.strategy.step_post_backward(
                    g.params, self.optimizers, self.strategy_state, step, info, packed=packed
                )
        self.clamp_scales()
        self.step += 1
        return float(loss.detach())

    def _with_frozen(
        self, subset: GaussianSubset, viewmat: Tensor, K: Tensor, cam: Camera, degree: int
    ) -> GaussianSubset:
        """The trainable subset plus the frozen rows that reach this view (constants: no gradient)."""
        frozen = self._frozen_rows
        ids = reaching_view(viewmat, K, cam.width, cam.height, frozen["means"], frozen["scales"])
        k = num_sh_rest(degree)
        for key in PARAM_KEYS:
            rows = frozen[key][ids] if key != "shN" else frozen["shN"][ids, :k]
            subset.params[key] = torch.cat([subset.params[key], rows], dim=0)
        return subset

    def write_back(self) -> None:
        """Copy the trained rows into the full Gaussian set (a no-op when every Gaussian was trainable)."""
        if self._trainable_ids is None:
            return
        with torch.no_grad():
            for key in PARAM_KEYS:
                self._full.params[key][self._trainable_ids] = self.gaussians.params[key].detach()

    def run(self, steps: int, on_step: Callable[[int, float], None] | None = None) -> list[float]:
        """Run `steps` more steps (each on one view drawn with the view weights); the loss per step."""
        losses: list[float] = []
        for _ in range(steps):
            losses.append(self.train_step())
            if on_step is not None:
                on_step(self.step - 1, losses[-1])
        return losses

    # --- checkpoints ------------------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """(tensors, json-able metadata) that load_state_dict turns back into this exact state."""
        tensors = {f"param.{k}": v for k, v in self.gaussians.tensors().items()}
        for key, opt in self.optimizers.items():
            for name, value in opt.state.get(self.gaussians.params[key], {}).items():
                tensors[f"adam.{key}.{name}"] = value.detach().clone()
        if self.poses is not None:
            tensors["pose.delta"] = self.poses.delta.detach().clone()
            for name, value in self.pose_optimizer.state.get(self.poses.delta, {}).items():
                tensors[f"pose_adam.{name}"] = value.detach().clone()
        for name, value in state_tensors(self.strategy_state).items():
            tensors[f"strategy.{name}"] = value.detach().clone()
        gen = generator_state(self.strategy_state)
        if gen is not None:
            tensors["rng.strategy_generator"] = gen
        # gsplat's strategies draw from torch's global generators (randn for splits, multinomial for MCMC).
        tensors["rng.torch_cpu"] = torch.get_rng_state()
        device = self.gaussians.device
        if device.type == "cuda":
            tensors["rng.torch_cuda"] = torch.cuda.get_rng_state(device)
        meta = {
            "step": self.step,
            "strategy_kind": strategy_kind(self.strategy),
            "rng": self.rng.bit_generator.state,
            "strategy_scalars": {
                k: v
                for k, v in self.strategy_state.items()
                if isinstance(v, (int, float)) and k != "generator"
            },
        }
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Restore a state_dict() (the Trainer must have been built with the same views and settings)."""
        device = self.gaussians.device
        saved_kind, kind = meta.get("strategy_kind"), strategy_kind(self.strategy)
        if saved_kind is not None and saved_kind != kind:
            raise StitchError(
                f"the checkpoint was written with the {saved_kind} strategy, this run uses {kind} (another "
                "device picks another strategy under --strategy auto); pass the same --strategy, or --restart"
            )
        params = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("param.")}
        fresh = Gaussians({k: v.to(device) for k, v in params.items()})
        for key in PARAM_KEYS:  # swap the parameters in place: optimisers follow
            old = self.gaussians.params[key]
            new = torch.nn.Parameter(fresh.params[key].detach(), requires_grad=old.requires_grad)
            opt = self.optimizers[key]
            opt.param_groups[0]["params"] = [new]
            opt.state.pop(old, None)
            moments = {
                k.rsplit(".", 1)[1]: v.to(device) for k, v in tensors.items() if k.startswith(f"adam.{key}.")
            }
            if moments:
                opt.state[new] = moments
            self.gaussians.params[key] = new
        if self.poses is not None and "pose.delta" in tensors:
            with torch.no_grad():
                self.poses.delta.copy_(tensors["pose.delta"].to(device))
            moments = {
                k.split(".", 1)[1]: v.to(device) for k, v in tensors.items() if k.startswith("pose_adam.")
            }
            if moments:
                self.pose_optimizer.state[self.poses.delta] = moments
        saved = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("strategy.")}
        load_state_tensors(self.strategy_state, saved, device, tensors.get("rng.strategy_generator"))
        if "rng.torch_cpu" in tensors:
            torch.set_rng_state(tensors["rng.torch_cpu"].to(torch.uint8).cpu())
        if "rng.torch_cuda" in tensors and device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.torch_cuda"].to(torch.uint8).cpu(), device)
        self.strategy_state.update(meta.get("strategy_scalars", {}))
        self.rng.bit_generator.state = meta["rng"]
        self.step = int(meta["step"])


MCMC_OPACITY_REG = 0.01  # gsplat's simple_trainer with --strategy mcmc: opacity_reg / scale_reg
MCMC_SCALE_REG = 0.01


def mcmc_regularizers(params) -> Tensor:
    """MCMC's L1 pulls on opacity and scale (gsplat's trainer): without them MCMC's relocation has few
    transparent Gaussians to move and its noise spreads large ones."""
    return (
        MCMC_OPACITY_REG * torch.sigmoid(params["opacities"]).mean()
        + MCMC_SCALE_REG * torch.exp(params["scales"]).mean()
    )


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
    strategy: Any | None = None,
    schedule: Schedule | None = None,
    regularization: Regularization | None = None,
    pose_refine: bool = False,
    min_sigma_px: float | None = None,  # size floor in view pixels (None: MIN_SIGMA_PX, 0: none)
) -> list[float]:
    """Run `steps` Adam steps, each on one view drawn with `view_weights`; returns the loss per step."""
    if steps <= 0 or len(gaussians) == 0 or not views:
        return []
    trainer = Trainer(
        gaussians,
        views,
        steps,
        lrs=lrs,
        ssim_weight=ssim_weight,
        resolution_scale=resolution_scale,
        trainable=trainable,
        view_weights=view_weights,
        seed=seed,
        background=background,
        strategy=strategy,
        schedule=schedule,
        regularization=regularization,
        pose_refine=pose_refine,
        min_sigma_px=min_sigma_px,
    )
    losses = trainer.run(steps, on_step)
    trainer.write_back()
    return losses
