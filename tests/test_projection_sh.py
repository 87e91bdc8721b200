"""Projection and SH colour agree with gsplat's pure-PyTorch reference (so CPU renders match CUDA renders)."""

from __future__ import annotations

import pytest
import torch
from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci, _spherical_harmonics
from render_reference import H, W, random_scene, two_cameras

from splat.projection import project
from splat.sh import eval_sh


def test_projection_matches_gsplat_reference():
    scene = random_scene(11, n=200)
    p = scene.params
    viewmats, Ks = two_cameras()
    scales = torch.exp(p["scales"])
    ours = project(p["means"], p["quats"], scales, viewmats, Ks, W, H)
    covars, _ = _quat_scale_to_covar_preci(p["quats"], scales, compute_preci=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(p["means"], covars, viewmats, Ks, W, H)

    visible = (radii > 0).all(-1)
    assert visible.sum() > 100 and (~visible).sum() > 0  # both cases exercised
    assert torch.equal(ours.radii, radii.to(torch.int32))
    torch.testing.assert_close(ours.depths, depths)
    torch.testing.assert_close(ours.means2d[visible], means2d[visible])
    torch.testing.assert_close(ours.conics[visible], conics[visible])


def test_opacity_shrinks_and_culls_radii():
    """Faint Gaussians get tighter boxes (gsplat's opacity-aware extent); invisible ones are culled."""
    scene = random_scene(12, n=200)
    p = scene.params
    viewmats, Ks = two_cameras()
    args = (p["means"], p["quats"], torch.exp(p["scales"]), viewmats, Ks, W, H)
    full = project(*args).radii
    opac = torch.full((200,), 0.02, dtype=torch.float64)
    opac[:5] = 1e-3  # below 1/255: never drawn
    faint = project(*args, opacities=opac).radii
    assert (faint <= full).all() and (faint < full).any()
    assert (faint[:, :5] == 0).all()


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_matches_gsplat_reference(degree):
    g = torch.Generator().manual_seed(degree)
    dirs = torch.randn(500, 3, generator=g, dtype=torch.float64) * 3.0  # not unit: both normalise
    coeffs = torch.randn(500, 16, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(eval_sh(degree, dirs, coeffs), _spherical_harmonics(degree, dirs, coeffs))


def test_sh_gradients_flow_to_directions_and_coefficients():
    dirs = torch.randn(20, 3, dtype=torch.float64, requires_grad=True)
    coeffs = torch.randn(20, 16, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda d, c: eval_sh(3, d, c), (dirs, coeffs))
