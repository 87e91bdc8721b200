"""The CPU compositor on its own: any channel count, and safe to call from several threads at once."""

from __future__ import annotations

import multiprocessing
import os
import threading

import pytest
import torch
from render_reference import H, W, random_scene, two_cameras

from splat.cpu.raster import rasterize
from splat.gaussians import Gaussians
from splat.render import render


def projected(seed: int = 0):
    scene = random_scene(seed, dtype=torch.float32)
    viewmats, Ks = two_cameras(torch.float32)
    with torch.no_grad():
        m = render(scene, viewmats, Ks, W, H).meta
    return m["means2d"], m["conics"], m["opacities"].contiguous(), m["radii"], m["depths"]


def test_any_channel_count_composites_like_four_channel_groups():
    means2d, conics, opac, radii, depths = projected()
    colors = torch.rand(2, 50, 6, generator=torch.Generator().manual_seed(0), requires_grad=True)
    bg = torch.rand(2, 6)
    out6, alpha6 = rasterize(means2d, conics, colors, opac, radii, depths, W, H, background=bg)
    out4, alpha4 = rasterize(
        means2d, conics, colors[..., :4], opac, radii, depths, W, H, background=bg[:, :4]
    )
    out3, _ = rasterize(means2d, conics, colors[..., 3:], opac, radii, depths, W, H, background=bg[:, 3:])
    assert out6.shape == (2, H, W, 6) and alpha6.shape == (2, H, W, 1)
    torch.testing.assert_close(out6[..., :4], out4)
    torch.testing.assert_close(out6[..., 3:], out3)
    torch.testing.assert_close(alpha6, alpha4)
    out6[..., 5].sum().backward()
    assert colors.grad[..., 5].abs().sum() > 0 and colors.grad[..., :5].abs().sum() == 0


def test_concurrent_renders_from_several_threads_match_serial_ones():
    """The viewer and the optimiser may render at the same time."""
    scenes = [random_scene(s, dtype=torch.float32) for s in range(4)]
    viewmats, Ks = two_cameras(torch.float32)
    serial = [render(s, viewmats, Ks, W, H).rgb for s in scenes]
    results: dict[int, torch.Tensor] = {}

    def work(i: int) -> None:
        for _ in range(3):
            results[i] = render(scenes[i], viewmats, Ks, W, H).rgb

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        torch.testing.assert_close(results[i], serial[i], rtol=0, atol=0)


def test_render_uses_several_threads_with_the_same_result():
    scene = random_scene(9, n=2500, dtype=torch.float32)  # > 1 projection block (1024 Gaussians)
    viewmats, Ks = two_cameras(torch.float32)
    Ks[:, :2] *= 4  # the same view at 4x the resolution: many tiles to share out
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = render(scene, viewmats, Ks, 4 * W, 4 * H)
        one.rgb.sum().backward()
        grads_one = {k: v.grad.clone() for k, v in scene.params.items()}
        scene.zero_grad()
        torch.set_num_threads(2)
        two = render(scene, viewmats, Ks, 4 * W, 4 * H)
        two.rgb.sum().backward()
    finally:
        torch.set_num_threads(old)
    torch.testing.assert_close(one.rgb, two.rgb, rtol=0, atol=0)
    for key, p in scene.params.items():  # same sums in the same order: identical, not just close
        torch.testing.assert_close(p.grad, grads_one[key], rtol=0, atol=0)
    assert one.alpha.mean() > 0.2  # the scene really covers the image


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_render_works_in_a_forked_child_after_threaded_use():
    """Data loaders and job runners fork: the child must not wait on the parent's tile threads."""
    scene = random_scene(10, dtype=torch.float32)
    viewmats, Ks = two_cameras(torch.float32)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = render(scene, viewmats, Ks, W, H).rgb  # starts the parent's thread pool
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(1) as pool:
            got = pool.apply_async(_render_sum, (scene.tensors(), viewmats, Ks)).get(timeout=60)
    finally:
        torch.set_num_threads(old)
    assert abs(got - expected.sum().item()) < 1e-3


def _render_sum(params, viewmats, Ks) -> float:
    torch.set_num_threads(2)
    return render(Gaussians(params), viewmats, Ks, W, H).rgb.sum().item()
