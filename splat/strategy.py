"""Densification and pruning behind gsplat's strategy interface.

Every strategy here has gsplat's three calls: `initialize_state()`, `step_pre_backward(params, optimizers,
state, step, info)` before `loss.backward()`, and `step_post_backward(...)` after the optimiser step, with
`info` the renderer's meta (means2d, radii, width, height, n_cameras, gaussian_ids).

- On CUDA, `make_strategy("default" | "mcmc")` gives gsplat's own `DefaultStrategy` (with a Gaussian budget
  on growth) or `MCMCStrategy` (cap_max = budget). MCMC needs gsplat's CUDA relocation kernel.
- `BudgetStrategy` is the project's own, in plain torch (the CPU path): it accumulates the screen-space
  gradient of each Gaussian's 2D mean, clones small and splits large Gaussians whose average gradient is
  high (highest first, never past the budget), and prunes transparent and huge ones. Parameters, Adam
  moments and statistics change together (splat.densify_ops).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from splat.densify_ops import clone, remove, split
from splat.errors import StitchError

STRATEGIES = ("none", "cpu", "default", "mcmc")


@dataclass
class BudgetStrategy:
    """Clone/split by accumulated 2D-mean gradient, prune by opacity and size, within `budget` Gaussians."""

    budget: int = 300_000  # growth never takes the count past this
    grow_grad2d: float = 0.0002  # average |d loss / d means2d| in NDC units (gsplat's scale) to grow
    grow_scale3d: float = 0.01  # largest axis / scene_scale below this: clone; above: split
    prune_opa: float = 0.005  # opacity below this: prune
    prune_scale3d: float = 0.5  # largest axis / scene_scale above this: prune (blobs that grew)
    prune_scale2d: float | None = None  # screen radius / max(width, height) above this: prune (None: off)
    refine_start_iter: int = 100
    refine_stop_iter: int = 1_000
    refine_every: int = 50
    split_shrink: float = 1.6
    absgrad: bool = False
    seed: int = 0
    verbose: bool = False

    def initialize_state(self, scene_scale: float = 1.0) -> dict[str, Any]:
        # Statistics are created at the first step, on the parameters' device.
        return {
            "grad2d": None,  # [N] sum of gradient norms
            "count": None,  # [N] how many renders each Gaussian was in
            "radii": None,  # [N] largest normalised screen radius seen
            "scene_scale": float(scene_scale),
            "generator": torch.Generator().manual_seed(self.seed),
            "n_grown": 0,
            "n_pruned": 0,
        }

    def check_sanity(self, params, optimizers) -> None:
        trainable = {k for k, p in params.items() if p.requires_grad}
        if trainable != set(optimizers):
            raise StitchError(
                f"optimisers {sorted(optimizers)} must match trainable params {sorted(trainable)}"
            )
        for key in ("means", "scales", "quats", "opacities"):
            if key not in params:
                raise StitchError(f"strategy needs parameter {key!r}")
        if self.budget < 1:
            raise StitchError(f"Gaussian budget must be positive, got {self.budget}")

    def step_pre_backward(self, params, optimizers, state, step: int, info: dict) -> None:
        if step < self.refine_stop_iter and info["means2d"].requires_grad:
            info["means2d"].retain_grad()

    def step_post_backward(
        self, params, optimizers, state, step: int, info: dict, packed: bool = False
    ) -> None:
        if step >= self.refine_stop_iter:
            return
        self._accumulate(params, state, info, packed)
        if step > self.refine_start_iter and step % self.refine_every == 0:
            n_pruned = self.prune(params, optimizers, state)
            n_grown = self.grow(params, optimizers, state)
            if self.verbose:
                print(f"step {step}: +{n_grown} -{n_pruned} -> {len(params['means'])} Gaussians")
            for key in ("grad2d", "count", "radii"):
                state[key].zero_()

    # --- statistics -------------------------------------------------------------------------------------
    @torch.no_grad()
    def _accumulate(self, params, state, info: dict, packed: bool) -> None:
        means2d = info["means2d"]
        grads = means2d.absgrad if self.absgrad else means2d.grad
        n = len(params["means"])
        device = params["means"].device
        for key in ("grad2d", "count", "radii"):
            if state[key] is None:
                state[key] = torch.zeros(n, device=device)
        if grads is None:
            return
        grads = grads.detach().clone()
        grads[..., 0] *= info["width"] / 2.0 * info["n_cameras"]  # to NDC units, as gsplat
        grads[..., 1] *= info["height"] / 2.0 * info["n_cameras"]
        radii = info["radii"]
        if packed:  # [nnz, 2] rows for Gaussians gaussian_ids [nnz]
            sel = (radii > 0).all(dim=-1)
            ids = info["gaussian_ids"][sel]
        else:  # [C, N, 2]
            sel = (radii > 0).all(dim=-1)
            ids = torch.where(sel)[1]
        grads, radii = grads[sel], radii[sel]
        state["grad2d"].index_add_(0, ids, grads.norm(dim=-1).to(state["grad2d"].dtype))
        state["count"].index_add_(0, ids, torch.ones_like(ids, dtype=state["count"].dtype))
        screen = radii.max(dim=-1).values.float() / float(max(info["width"], info["height"]))
        state["radii"][ids] = torch.maximum(state["radii"][ids], screen)

    # --- edits --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def prune(self, params, optimizers, state) -> int:
        opac = torch.sigmoid(params["opacities"].detach())
        largest = torch.exp(params["scales"].detach()).max(dim=-1).values
        mask = (opac < self.prune_opa) | (largest > self.prune_scale3d * state["scene_scale"])
        if self.prune_scale2d is not None:
            mask |= state["radii"] > self.prune_scale2d
        if bool(mask.all()):  # never empty the scene
            mask[torch.argmax(opac)] = False
        n = remove(params, optimizers, state, mask)
        state["n_pruned"] += n
        return n

    @torch.no_grad()
    def grow(self, params, optimizers, state) -> int:
        n = len(params["means"])
        room = self.budget - n
        if room <= 0:
            return 0
        avg = state["grad2d"] / state["count"].clamp_min(1.0)
        candidates = (avg > self.grow_grad2d) & (state["count"] > 0)
        if int(candidates.sum()) > room:  # the budget goes to the highest gradients
            top = torch.topk(torch.where(candidates, avg, torch.zeros_like(avg)), room).indices
            candidates = torch.zeros_like(candidates)
            candidates[top] = True
        small = (
            torch.exp(params["scales"].detach()).max(dim=-1).values
            <= self.grow_scale3d * state["scene_scale"]
        )
        to_clone, to_split = candidates & small, candidates & ~small
        n_clone = clone(params, optimizers, state, to_clone)
        # Clones sit at the end and are not split again this round.
        to_split = torch.cat([to_split, to_split.new_zeros(n_clone)])
        n_split = split(params, optimizers, state, to_split, state["generator"], self.split_shrink)
        state["n_grown"] += n_clone + n_split
        return n_clone + n_split


def _budgeted_default_strategy():
    """gsplat's DefaultStrategy whose growth stops at a Gaussian budget (highest gradients first)."""
    from gsplat.strategy import DefaultStrategy

    @dataclass
    class BudgetedDefaultStrategy(DefaultStrategy):
        budget: int = 1_000_000

        @torch.no_grad()
        def _grow_gs(self, params, optimizers, state, step):
            room = self.budget - len(params["means"])
            avg = state["grad2d"] / state["count"].clamp_min(1)
            high = avg > self.grow_grad2d
            if int(high.sum()) > max(room, 0):
                # Gradients below the room's k-th largest drop out of this round's growth.
                cut = torch.topk(avg, max(room, 0) + 1).values[-1] if room > 0 else avg.max() + 1
                state["grad2d"] = torch.where(avg > cut, state["grad2d"], torch.zeros_like(avg))
            return super()._grow_gs(params, optimizers, state, step)

        def step_post_backward(self, params, optimizers, state, step, info, packed=False):
            super().step_post_backward(params, optimizers, state, step, info, packed=packed)
            # gsplat 1.5.3 tests `step % reset_every == 0 & step > 0`, which is never true (`&` binds
            # first): the opacity reset never runs. Do it here, inside the refinement window.
            if self.refine_start_iter < step < self.refine_stop_iter and step % self.reset_every == 0:
                from gsplat.strategy.ops import reset_opa

                reset_opa(params, optimizers, state, value=self.prune_opa * 2.0)

    return BudgetedDefaultStrategy


def make_strategy(
    name: str,
    *,
    device: torch.device | str,
    steps: int,
    budget: int | None = None,
    n_initial: int = 0,
    seed: int = 0,
) -> Any | None:
    """A strategy for `steps` optimisation steps; refinement runs over the first 80 % of them.

    name: "none" (no densification), "cpu" (BudgetStrategy, any device), "default" / "mcmc" (gsplat's, CUDA).
    budget: most Gaussians; None -> 1.25x the initial count on CPU, 2x on CUDA.
    """
    if name not in STRATEGIES:
        raise StitchError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if name == "none":
        return None
    from splat import render as splat_render  # gsplat's strategies go where gsplat renders

    cuda = splat_render.uses_gsplat(device)
    if name in ("default", "mcmc") and not cuda:
        raise StitchError(f"strategy {name!r} runs gsplat's CUDA code; on CPU use --strategy cpu")
    if budget is not None and budget < 1:
        raise StitchError(f"--budget must be a positive Gaussian count, got {budget}")
    if budget is None:
        budget = max(1000, int(n_initial * (2.0 if cuda else 1.25)))
    start = min(500, max(1, steps // 10))
    stop = max(start + 1, int(0.8 * steps))
    every = max(1, min(100, steps // 10))
    if name == "cpu":
        return BudgetStrategy(
            budget=budget, refine_start_iter=start, refine_stop_iter=stop, refine_every=every, seed=seed
        )
    if name == "default":
        cls = _budgeted_default_strategy()
        # gsplat prunes oversized Gaussians only after step reset_every (default 3000, for 30k-step
        # training): scaled to this run, a ~1000-step refine resets opacity at 300 and 600 and prunes
        # oversized Gaussians from step 300 on.
        reset = max(every, int(0.3 * steps))
        return cls(
            budget=budget,
            refine_start_iter=start,
            refine_stop_iter=stop,
            refine_every=every,
            reset_every=reset,
        )
    from gsplat.strategy import MCMCStrategy

    return MCMCStrategy(cap_max=budget, refine_start_iter=start, refine_stop_iter=stop, refine_every=every)


def is_mcmc(strategy: Any) -> bool:
    return type(strategy).__name__ == "MCMCStrategy"


def strategy_counts(state: dict[str, Any]) -> dict[str, int]:
    """Grown/pruned totals the BudgetStrategy keeps (empty for gsplat's strategies)."""
    return {k: int(state[k]) for k in ("n_grown", "n_pruned") if k in state}


def state_tensors(state: dict[str, Any]) -> dict[str, Tensor]:
    """The per-Gaussian statistics of a strategy state, for checkpoints. The random generator is not among
    them (see generator_state): gsplat indexes every tensor of its state by Gaussian rows."""
    return {k: v for k, v in state.items() if isinstance(v, Tensor)}


def generator_state(state: dict[str, Any]) -> Tensor | None:
    """The strategy's own random generator state (BudgetStrategy), saved apart from the statistics."""
    gen = state.get("generator")
    return gen.get_state() if isinstance(gen, torch.Generator) else None


def load_state_tensors(
    state: dict[str, Any], tensors: dict[str, Tensor], device, generator: Tensor | None = None
) -> None:
    """Inverse of state_tensors (+ generator_state): statistics back into `state`, the generator restored.

    A "generator" entry among the statistics (checkpoints written before they were split) goes to the
    generator, never into the state where a row-indexing strategy would trip over it."""
    tensors = dict(tensors)
    old_style = tensors.pop("generator", None)
    generator = generator if generator is not None else old_style
    for key, value in tensors.items():
        state[key] = value.to(device)
    if generator is not None and isinstance(state.get("generator"), torch.Generator):
        state["generator"].set_state(generator.to(torch.uint8).cpu())


def strategy_kind(strategy: Any) -> str:
    """A name for checkpoints: "none" or the strategy's class (BudgetStrategy, DefaultStrategy, ...)."""
    if strategy is None:
        return "none"
    name = type(strategy).__name__
    return "DefaultStrategy" if name == "BudgetedDefaultStrategy" else name
