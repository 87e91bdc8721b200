"""Edits of a Gaussian parameter dict that keep every optimiser's state and every strategy statistic aligned.

Each op swaps all parameters at once for new tensors (new rows at the end), and applies the same row
mapping to the Adam moments of each parameter and to every per-Gaussian tensor in the strategy state.
New rows get zero moments and zero statistics, as gsplat's own strategy ops do.

    params      ParameterDict (or dict) of [N, ...] Parameters in gsplat's keys
    optimizers  {key: torch.optim.Optimizer}, one param group holding params[key]
    state       strategy state: any Tensor whose first dimension is N is remapped
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping

import torch
from torch import Tensor

from splat.projection import quat_to_rotmat

RowFn = Callable[[Tensor], Tensor]  # [N, ...] -> [N', ...], the same row mapping for params and state


@torch.no_grad()
def remap(
    params: MutableMapping[str, torch.nn.Parameter],
    optimizers: MutableMapping[str, torch.optim.Optimizer],
    state: MutableMapping,
    param_fn: Callable[[str, Tensor], Tensor],  # (key, old [N, ...]) -> new [N', ...]
    row_fn: RowFn,  # old per-Gaussian tensor [N, ...] -> [N', ...] (new rows zero)
) -> None:
    """Replace every parameter by param_fn(key, old); moments and state tensors follow row_fn."""
    n_old = int(next(iter(params.values())).shape[0])
    for key in list(params.keys()):
        old = params[key]
        new = torch.nn.Parameter(param_fn(key, old.detach()), requires_grad=old.requires_grad)
        opt = optimizers.get(key)
        if opt is not None:
            for group in opt.param_groups:
                group["params"] = [new if p is old else p for p in group["params"]]
            moments = opt.state.pop(old, None)
            if moments is not None:
                for name, value in moments.items():
                    if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == n_old:
                        moments[name] = row_fn(value)
                opt.state[new] = moments
        params[key] = new
    for name, value in list(state.items()):
        if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == n_old:
            state[name] = row_fn(value)


def _append_zeros(n_new: int) -> RowFn:
    return lambda v: torch.cat([v, v.new_zeros((n_new, *v.shape[1:]))])


def remove(params, optimizers, state, mask: Tensor) -> int:
    """Drop the Gaussians where mask [N] (bool) is True; returns how many went."""
    keep = ~mask
    n = int(mask.sum())
    if n:
        remap(params, optimizers, state, lambda _k, p: p[keep], lambda v: v[keep])
    return n


def clone(params, optimizers, state, mask: Tensor) -> int:
    """Append an exact copy of each Gaussian where mask [N]; the copies drift apart under their gradients."""
    n = int(mask.sum())
    if n:
        remap(params, optimizers, state, lambda _k, p: torch.cat([p, p[mask]]), _append_zeros(n))
    return n


def split(
    params,
    optimizers,
    state,
    mask: Tensor,  # [N] bool
    generator: torch.Generator,
    shrink: float = 1.6,
) -> int:
    """Replace each Gaussian where mask [N] by two, drawn from its own distribution, each `shrink` times
    smaller (3DGS); opacity keeps the pair's coverage close to the parent's ( 1 - sqrt(1 - o) each)."""
    n = int(mask.sum())
    if not n:
        return 0
    p = {k: v.detach() for k, v in params.items()}
    scales = torch.exp(p["scales"][mask])  # [n, 3]
    rot = quat_to_rotmat(p["quats"][mask])  # [n, 3, 3]
    noise = torch.randn((2, n, 3), generator=generator, dtype=scales.dtype).to(scales.device)
    offsets = torch.einsum("nij,bnj->bni", rot, scales[None] * noise)  # [2, n, 3]
    opac = torch.sigmoid(p["opacities"][mask])
    pair_opac = 1.0 - torch.sqrt((1.0 - opac).clamp_min(0.0))
    children = {
        "means": (p["means"][mask][None] + offsets).reshape(2 * n, 3),
        "scales": torch.log(scales / shrink).repeat(2, 1),
        "opacities": torch.logit(pair_opac.clamp(1e-6, 1 - 1e-6)).repeat(2),
    }
    keep = ~mask

    def param_fn(key: str, old: Tensor) -> Tensor:
        new_rows = children.get(key)
        if new_rows is None:
            new_rows = old[mask].repeat(2, *([1] * (old.ndim - 1)))
        return torch.cat([old[keep], new_rows.to(old.dtype)])

    def row_fn(v: Tensor) -> Tensor:
        return torch.cat([v[keep], v.new_zeros((2 * n, *v.shape[1:]))])

    remap(params, optimizers, state, param_fn, row_fn)
    return n
