"""The renderer: CPU images and gradients against a slow dense reference, and what a user sees."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from render_reference import H, W, dense_render, random_scene, two_cameras

from splat.cameras import Camera, intrinsics
from splat.errors import StitchError
from splat.gaussians import Gaussians, rgb_to_sh0
from splat.render import render, render_camera


def weighted_loss(rgb, depth, alpha, seed: int = 7) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = [torch.randn(x.shape, generator=g, dtype=torch.float64).to(x.dtype) for x in (rgb, depth, alpha)]
    return (rgb * w[0]).sum() + 0.1 * (depth * w[1]).sum() + (alpha * w[2]).sum()


@pytest.mark.parametrize("seed", [0, 1])
def test_cpu_images_and_gradients_match_dense_reference(seed):
    scene = random_scene(seed)
    viewmats, Ks = two_cameras()
    background = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64, requires_grad=True)

    out = render(scene, viewmats, Ks, W, H, background=background)
    ref_params = {k: v.detach().clone().requires_grad_(True) for k, v in scene.params.items()}
    ref_bg = background.detach().clone().requires_grad_(True)
    rgb, depth, alpha = dense_render(ref_params, viewmats, Ks, W, H, 3, background=ref_bg)

    # the scene really exercises deep compositing (saturated pixels) and empty background
    assert alpha.max() > 0.999 and alpha.min() < 1e-3
    torch.testing.assert_close(out.rgb, rgb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.depth, depth, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.alpha, alpha, rtol=1e-5, atol=1e-5)

    weighted_loss(out.rgb, out.depth, out.alpha).backward()
    weighted_loss(rgb, depth, alpha).backward()
    for key, p in scene.params.items():
        ref_grad = ref_params[key].grad
        assert p.grad is not None, key
        scale = ref_grad.abs().max().clamp_min(1.0)
        torch.testing.assert_close(p.grad / scale, ref_grad / scale, rtol=1e-5, atol=1e-5, msg=key)
    torch.testing.assert_close(background.grad, ref_bg.grad, rtol=1e-5, atol=1e-5)


def test_camera_gradients_for_pose_refinement_match_dense_reference():
    """With viewmats requiring grad (pose refinement) render() differentiates the cameras too."""
    scene = random_scene(2, n=30)
    viewmats, Ks = two_cameras()
    ours_vm = viewmats.clone().requires_grad_(True)
    ref_vm = viewmats.clone().requires_grad_(True)
    out = render(scene, ours_vm, Ks, W, H)
    fast = render(scene, viewmats, Ks, W, H)  # the fused CPU projection, no camera gradients
    torch.testing.assert_close(out.rgb, fast.rgb, rtol=1e-6, atol=1e-6)
    ref_params = {k: v.detach().clone().requires_grad_(True) for k, v in scene.params.items()}
    weighted_loss(out.rgb, out.depth, out.alpha).backward()
    weighted_loss(*dense_render(ref_params, ref_vm, Ks, W, H, 3)).backward()
    torch.testing.assert_close(ours_vm.grad, ref_vm.grad, rtol=1e-5, atol=1e-5)
    for key, p in scene.params.items():
        scale = ref_params[key].grad.abs().max().clamp_min(1.0)
        torch.testing.assert_close(p.grad / scale, ref_params[key].grad / scale, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sh_degree", [0, 1, 2])
def test_lower_sh_degrees_match_dense_reference(sh_degree):
    scene = random_scene(3, n=30)
    viewmats, Ks = two_cameras()
    out = render(scene, viewmats, Ks, W, H, sh_degree=sh_degree)
    rgb, _, _ = dense_render(scene.params, viewmats, Ks, W, H, sh_degree)
    torch.testing.assert_close(out.rgb, rgb, rtol=1e-5, atol=1e-5)


def test_float32_render_matches_reference():
    """The production path (float32 kernels) agrees with the float64 reference to float32 accuracy."""
    scene = random_scene(4, dtype=torch.float32)
    viewmats, Ks = two_cameras(torch.float32)
    out = render(scene, viewmats, Ks, W, H)
    rgb, depth, alpha = dense_render(
        {k: v.double() for k, v in scene.params.items()}, viewmats.double(), Ks.double(), W, H, 3
    )
    assert (out.rgb.double() - rgb).abs().max() < 1e-4
    assert (out.alpha.double() - alpha).abs().max() < 1e-4
    assert ((out.depth.double() - depth).abs() * (alpha > 1e-2)).max() < 1e-3

    weighted_loss(out.rgb, out.depth, out.alpha).backward()
    ref = {k: v.detach().double().requires_grad_(True) for k, v in scene.params.items()}
    weighted_loss(*dense_render(ref, viewmats.double(), Ks.double(), W, H, 3)).backward()
    for key, p in scene.params.items():
        scale = ref[key].grad.abs().max().clamp_min(1.0)
        assert ((p.grad.double() - ref[key].grad).abs() / scale).max() < 1e-3, key


def test_gaussians_render_their_colours_where_they_project():
    """Red, green and blue blobs in front of a camera show up at their pixels; the rest is background."""
    width, height = 64, 48
    K = intrinsics(width, height)  # focal 64, centre (32, 24)
    camera = Camera(width, height, K, np.eye(4))
    # u = 32 + 64 x / z, v = 24 + 64 y / z: centres land on the centres of pixels (16, 24), (32, 24), (48, 24)
    y = 0.5 / 32
    means = torch.tensor(
        [[-15.5 / 32, y, 2.0], [0.5 / 32, y, 2.0], [16.5 / 32, y, 2.0], [1.0 / 32, 2 * y, 4.0]]
    )
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    n = len(means)
    scene = Gaussians(
        {
            "means": means,
            "scales": torch.full((n, 3), math.log(0.04)),
            "quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
            "opacities": torch.full((n,), 6.0),  # ~0.998
            "sh0": rgb_to_sh0(colors)[:, None],
            "shN": torch.zeros(n, 0, 3),
        }
    )
    background = torch.tensor([0.25, 0.25, 0.25])
    out = render_camera(scene, camera, background=background)
    assert out.rgb.shape == (1, height, width, 3) and out.alpha.shape == out.depth.shape == (
        1,
        height,
        width,
        1,
    )
    rgb, alpha, depth = out.rgb[0], out.alpha[0, ..., 0], out.depth[0, ..., 0]
    for u, colour in [(16, colors[0]), (48, colors[2])]:
        torch.testing.assert_close(rgb[24, u], colour, atol=0.01, rtol=0)
        assert abs(depth[24, u].item() - 2.0) < 1e-3
    # the green blob hides the yellow one behind it
    torch.testing.assert_close(rgb[24, 32], colors[1], atol=0.01, rtol=0)
    assert abs(depth[24, 32].item() - 2.0) < 1e-3
    # far from every blob: exactly the background, nothing accumulated, depth 0
    torch.testing.assert_close(rgb[2, 2], background)
    assert alpha[2, 2].item() < 1e-6 and depth[2, 2].item() == 0.0
    assert (alpha > 0.5).float().mean() < 0.2  # small blobs, mostly background


def test_render_camera_matches_render_with_same_matrices():
    scene = random_scene(5, dtype=torch.float32)
    K = intrinsics(W, H, focal=30.0)
    w2c = np.eye(4)
    w2c[:3, 3] = [0.1, 0.0, 0.2]
    a = render_camera(scene, Camera(W, H, K, w2c))
    b = render(scene, torch.from_numpy(w2c).float()[None], torch.from_numpy(K).float()[None], W, H)
    torch.testing.assert_close(a.rgb, b.rgb)


def test_meta_exposes_screen_space_gradients_for_densification():
    scene = random_scene(6, dtype=torch.float32)
    viewmats, Ks = two_cameras(torch.float32)
    out = render(scene, viewmats, Ks, W, H, absgrad=True)
    meta = out.meta
    assert meta["means2d"].shape == (2, 50, 2) and meta["radii"].shape == (2, 50, 2)
    assert meta["width"] == W and meta["height"] == H and meta["n_cameras"] == 2
    meta["means2d"].retain_grad()
    out.rgb.sum().backward()
    grad = meta["means2d"].grad
    visible = (meta["radii"] > 0).all(dim=-1)
    assert not visible[:, 0].any()  # behind the camera: culled
    assert (grad[~visible] == 0).all()
    assert (grad[visible].abs().sum(-1) > 0).float().mean() > 0.5
    absgrad = meta["means2d"].absgrad
    assert absgrad.shape == (2, 50, 2) and (absgrad >= grad.abs() - 1e-6).all()


def test_bad_inputs_raise_clear_errors():
    scene = random_scene(7, dtype=torch.float32)
    viewmats, Ks = two_cameras(torch.float32)
    with pytest.raises(StitchError, match="viewmats"):
        render(scene, viewmats[:, :3], Ks, W, H)
    with pytest.raises(StitchError, match="Ks"):
        render(scene, viewmats, Ks[:1], W, H)
    with pytest.raises(StitchError, match="sh_degree"):
        render(scene, viewmats, Ks, W, H, sh_degree=4)


def test_empty_scene_renders_background():
    scene = Gaussians.empty(sh_degree=1)
    viewmats, Ks = two_cameras(torch.float32)
    out = render(scene, viewmats, Ks, W, H, background=torch.tensor([1.0, 0.0, 0.5]))
    assert (out.alpha == 0).all() and (out.depth == 0).all()
    torch.testing.assert_close(out.rgb, torch.tensor([1.0, 0.0, 0.5]).expand(2, H, W, 3))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_gsplat_cuda_images_agree():
    scene = random_scene(8, n=400, dtype=torch.float32)
    viewmats, Ks = two_cameras(torch.float32)
    background = torch.tensor([0.1, 0.2, 0.3])
    cpu = render(scene, viewmats, Ks, W * 4, H * 4, background=background)
    gpu = render(scene.to("cuda"), viewmats.cuda(), Ks.cuda(), W * 4, H * 4, background=background.cuda())
    assert (cpu.rgb - gpu.rgb.cpu()).abs().mean() < 1e-3
    assert (cpu.alpha - gpu.alpha.cpu()).abs().mean() < 1e-3
    covered = cpu.alpha > 0.5
    assert ((cpu.depth - gpu.depth.cpu()).abs()[covered]).mean() < 1e-2
