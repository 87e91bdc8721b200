"""Fused projection + SH colour for the CPU renderer, in numba with a hand-written backward pass.

Computes, per camera and Gaussian, exactly what splat/projection.py and splat/sh.py compute in torch
(gsplat's conventions: EWA with the 0.3 px low-pass, clamped Jacobian, opacity-aware radii; colour =
SH(direction from the camera centre) + 0.5 clamped at 0). Doing it in one compiled loop instead of ~100 small
torch ops takes the CPU renderer's projection from ~26 ms to ~3 ms for 20k Gaussians, and keeps it out of
torch's OpenMP pool, whose barriers stall when the machine is shared. Gradients reach means, quaternions,
log-scales and SH coefficients; camera matrices get none (render() uses the torch path when they need them).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from splat.cpu.project_backward import project_backward
from splat.cpu.project_common import BLOCK
from splat.cpu.project_forward import project_forward
from splat.cpu.threads import run_jobs


def _np(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().numpy())


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, quats, log_scales, sh0, shN, opac, viewmats, Ks, width, height, degree, eps2d,
                near, far):  # fmt: skip
        C, N = viewmats.shape[0], means.shape[0]
        campos = torch.linalg.inv(viewmats.double())[:, :3, 3]
        args = [_np(x) for x in (means, quats, log_scales)]
        consts = [_np(viewmats.double()), _np(Ks.double()), _np(campos), width, height, eps2d]
        dt = args[0].dtype
        m2d, conics, colors = (np.empty((C, N, k), dt) for k in (2, 3, 4))
        radii = np.empty((C, N, 2), np.int32)
        run_jobs(
            project_forward, -(-N // BLOCK), *args, _np(opac), _np(sh0), _np(shN), degree, *consts, near, far,
            m2d, conics, colors, radii,
        )  # fmt: skip
        m2d, conics, colors, radii = (torch.from_numpy(x) for x in (m2d, conics, colors, radii))
        ctx.save_for_backward(means, quats, log_scales, sh0, shN, radii)
        ctx.consts = consts
        ctx.degree = degree
        ctx.mark_non_differentiable(radii)
        return m2d, conics, colors, radii

    @staticmethod
    def backward(ctx, v_m2d, v_conics, v_colors, _v_radii):
        means, quats, log_scales, sh0, shN, radii = ctx.saved_tensors
        C, N = radii.shape[:2]
        dt = _np(means).dtype
        # numpy, not torch, for these copies and zero fills: a torch op this size runs on torch's OpenMP
        # pool, whose barriers stall on a shared machine
        grad_in = lambda v, k: np.zeros((C, N, k), dt) if v is None else _np(v).astype(dt, copy=False)  # noqa: E731
        grads = [np.zeros(s, dt) for s in ((N, 3), (N, 4), (N, 3), tuple(sh0.shape), tuple(shN.shape))]
        run_jobs(
            project_backward, -(-N // BLOCK), _np(means), _np(quats), _np(log_scales), _np(sh0), _np(shN),
            ctx.degree, *ctx.consts, _np(radii), grad_in(v_m2d, 2), grad_in(v_conics, 3),
            grad_in(v_colors, 4), *grads,
        )  # fmt: skip
        return (*[torch.from_numpy(g) for g in grads], None, None, None, None, None, None, None, None, None)


def project_with_colors(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4] wxyz, any norm
    log_scales: Tensor,  # [N, 3]
    sh0: Tensor,  # [N, 1, 3]
    shN: Tensor,  # [N, K, 3], K >= (degree + 1)^2 - 1
    opacities: Tensor,  # [N] linear (only used for the radii; not differentiated here)
    viewmats: Tensor,  # [C, 4, 4] (no gradient)
    Ks: Tensor,  # [C, 3, 3] (no gradient)
    width: int,
    height: int,
    degree: int,
    eps2d: float = 0.3,
    near: float = 0.01,
    far: float = 1e10,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """-> means2d [C, N, 2], conics [C, N, 3], colours [C, N, 4] (SH rgb + 0.5 clamped, then z-depth),
    radii [C, N, 2] int32 (0 = culled; culled rows of the others are 0 except the depth)."""
    return _Project.apply(
        means, quats, log_scales, sh0, shN[:, : (degree + 1) ** 2 - 1], opacities.detach(), viewmats.detach(),
        Ks.detach(), width, height, degree, eps2d, near, far,
    )  # fmt: skip
