"""The CUDA branches (gsplat) exercised without a GPU: a contract test.

`gsplat.rasterization` is replaced by a CPU stand-in faithful to gsplat 1.5.3's documented signature and
return values (same keyword names and defaults, the same shape asserts, `render_mode="RGB+ED"` giving
[C, H, W, 4] colours and [C, H, W, 1] alphas, `meta` with means2d [C, N, 2], radii [C, N, 2] int32, depths,
conics, opacities, ids None when not packed, width/height/n_cameras/tile_size), and `splat.render.uses_gsplat`
is switched on for CPU tensors. Generation, `stitch render`, `stitch video` and `stitch refine` then take the
exact code paths they take on a GPU (gsplat renders, the frozen-gradient path of per-view optimisation,
gsplat's DefaultStrategy in refine), and must produce what the CPU path produces.
Not verified here: gsplat's CUDA kernels themselves, speed, memory (they need a GPU session).
"""

from __future__ import annotations

import json
import math
from typing import Literal

import numpy as np
import pytest
import torch
from torch import Tensor

gsplat = pytest.importorskip("gsplat")

import splat.render as splat_render  # noqa: E402
from engine.config import GenerateConfig, OptimConfig  # noqa: E402
from engine.run import run_generate  # noqa: E402
from engine.tools.refine import RefineConfig, refine_run  # noqa: E402
from splat.cpu.raster import rasterize_rgbd  # noqa: E402
from splat.errors import StitchError  # noqa: E402
from splat.gaussians import Gaussians  # noqa: E402
from splat.optimize import mcmc_regularizers  # noqa: E402
from splat.strategy import make_strategy  # noqa: E402


class FakeRasterization:
    """gsplat.rasterization (1.5.3) on CPU tensors, through the project's reference projection and tile
    compositor. Records every call so tests can prove the gsplat branch ran."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(
        self,
        means: Tensor,  # [N, 3]
        quats: Tensor,  # [N, 4]
        scales: Tensor,  # [N, 3] (activated)
        opacities: Tensor,  # [N] (activated)
        colors: Tensor,  # [N, K, 3] SH coefficients when sh_degree is given
        viewmats: Tensor,  # [C, 4, 4]
        Ks: Tensor,  # [C, 3, 3]
        width: int,
        height: int,
        near_plane: float = 0.01,
        far_plane: float = 1e10,
        radius_clip: float = 0.0,
        eps2d: float = 0.3,
        sh_degree: int | None = None,
        packed: bool = True,
        tile_size: int = 16,
        backgrounds: Tensor | None = None,
        render_mode: Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"] = "RGB",
        sparse_grad: bool = False,
        absgrad: bool = False,
        rasterize_mode: Literal["classic", "antialiased"] = "classic",
        **rest,
    ) -> tuple[Tensor, Tensor, dict]:
        N, C = means.shape[-2], viewmats.shape[-3]
        # gsplat's own asserts (rendering.py), the batch-free case.
        assert means.shape == (N, 3), means.shape
        assert quats.shape == (N, 4), quats.shape
        assert scales.shape == (N, 3), scales.shape
        assert opacities.shape == (N,), opacities.shape
        assert viewmats.shape == (C, 4, 4), viewmats.shape
        assert Ks.shape == (C, 3, 3), Ks.shape
        assert render_mode in ["RGB", "D", "ED", "RGB+D", "RGB+ED"], render_mode
        assert sh_degree is not None and colors.shape[-2] >= (sh_degree + 1) ** 2 and colors.shape[-1] == 3
        assert backgrounds is None or backgrounds.shape == (C, 3), backgrounds.shape
        assert not rest, f"unexpected arguments {sorted(rest)}"
        if packed:
            raise NotImplementedError("the stand-in renders the dense layout (stitch passes packed=False)")
        assert render_mode == "RGB+ED" and eps2d == 0.3 and rasterize_mode == "classic"
        assert bool((scales > 0).all()) and bool(((opacities >= 0) & (opacities <= 1)).all())
        self.calls.append({"N": N, "C": C, "width": width, "height": height, "device": means.device})
        p = {"means": means, "quats": quats, "scales": torch.log(scales), "sh0": colors[:, :1],
             "shN": colors[:, 1:]}  # fmt: skip
        means2d, conics, cols, radii = splat_render._project_torch(
            p, opacities, viewmats, Ks, width, height, sh_degree, near_plane, far_plane
        )
        opac = opacities[None].expand(C, -1)
        rgb, depth, alpha = rasterize_rgbd(
            means2d, conics, cols, opac, radii, width, height, backgrounds, absgrad
        )
        meta = {
            "batch_ids": None,
            "camera_ids": None,
            "gaussian_ids": None,
            "radii": radii,  # [C, N, 2] int32
            "means2d": means2d,  # [C, N, 2]
            "depths": cols[..., 3],  # [C, N]
            "conics": conics,  # [C, N, 3]
            "opacities": opac,  # [C, N]
            "width": width,
            "height": height,
            "tile_size": tile_size,
            "n_batches": 1,
            "n_cameras": C,
        }
        return torch.cat([rgb, depth], dim=-1), alpha, meta


@pytest.fixture
def fake_gsplat(monkeypatch):
    fake = FakeRasterization()
    monkeypatch.setattr(gsplat, "rasterization", fake)
    monkeypatch.setattr(splat_render, "uses_gsplat", lambda device: True)
    return fake


def _gaussians(n=300, seed=0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    pts = torch.randn(n, 3, generator=g) * 0.6 + torch.tensor([0.0, 0.0, 3.0])
    cols = torch.rand(n, 3, generator=g)
    return Gaussians.from_points(pts, cols, sh_degree=1, opacity=0.8, scale_factor=0.7)


def test_stand_in_keeps_gsplats_contract_and_matches_the_cpu_renderer(fake_gsplat):
    from engine.trajectory import trajectory

    g = _gaussians()
    cam = trajectory("single", 40, 32)[0]
    via_gsplat = splat_render.render_camera(g, cam)
    assert len(fake_gsplat.calls) == 1
    assert via_gsplat.rgb.shape == (1, 32, 40, 3) and via_gsplat.depth.shape == (1, 32, 40, 1)
    assert via_gsplat.meta["radii"].dtype == torch.int32 and via_gsplat.meta["radii"].shape == (1, 300, 2)
    p = g.params
    with pytest.raises(AssertionError):  # a shape gsplat would refuse (quats [N, 3]), the stand-in refuses
        fake_gsplat(
            p["means"], p["quats"][:, :3], p["scales"].exp(), torch.sigmoid(p["opacities"]),
            torch.cat([p["sh0"], p["shN"]], 1), torch.eye(4)[None], torch.eye(3)[None], 8, 8,
            sh_degree=1, packed=False, render_mode="RGB+ED",
        )  # fmt: skip
    splat_render.uses_gsplat = lambda device: False  # monkeypatch restores it afterwards
    via_cpu = splat_render.render_camera(g, cam)
    torch.testing.assert_close(via_gsplat.rgb, via_cpu.rgb, atol=2e-4, rtol=0)
    torch.testing.assert_close(via_gsplat.alpha, via_cpu.alpha, atol=2e-4, rtol=0)


def _photo(tmp_path):
    from PIL import Image

    yy, xx = np.mgrid[0:40, 0:56]
    rng = np.random.default_rng(0)
    img = np.stack([xx / 56, yy / 40, 0.4 + 0.2 * rng.random((40, 56))], -1)
    path = tmp_path / "photo.png"
    Image.fromarray((img * 255).astype(np.uint8)).save(path)
    return path


def _generate(photo, out, steps=4):
    config = GenerateConfig(photo=photo, mode="stage", max_side=56, optim=OptimConfig(steps_per_view=steps))
    return run_generate(config, output=out / "scene.ply", quiet=True, device="cpu")


@pytest.mark.slow
def test_generation_render_video_and_refine_run_through_gsplat(fake_gsplat, tmp_path):
    from engine.tools.render import render_scene_to_png
    from engine.tools.video import make_video

    photo = _photo(tmp_path)
    result = _generate(photo, tmp_path / "gpu")
    n_generate = len(fake_gsplat.calls)
    # 3 views: 2 renders of the scene into new views, 4 optimisation steps each, the preview, the quality.
    assert n_generate >= 2 + 3 * 4
    manifest = json.loads((tmp_path / "gpu" / "manifest.json").read_text())
    assert manifest["renderer"] == "gsplat" and manifest["status"] == "finished"
    psnr_gpu = manifest["quality"]

    render_scene_to_png(tmp_path / "gpu" / "scene.ply", tmp_path / "r.png", "stage", 48, 32, device="cpu")
    assert len(fake_gsplat.calls) == n_generate + 3
    make_video(tmp_path / "gpu", tmp_path / "v", frames=4, progress=False, device="cpu")
    assert len(fake_gsplat.calls) == n_generate + 3 + 4

    refine_run(tmp_path / "gpu", RefineConfig(steps=30, checkpoint_every=10, device="cpu"))
    meta = json.loads((tmp_path / "gpu" / "refine" / "state.json").read_text())["trainer"]
    assert meta["strategy_kind"] == "DefaultStrategy"  # gsplat's own strategy on the "GPU" path
    from safetensors.torch import load_file

    saved = load_file(str(next((tmp_path / "gpu" / "refine").glob("trainer_*.safetensors"))))
    assert "rng.torch_cpu" in saved and not any(k == "strategy.generator" for k in saved)

    # The same generation on the CPU path: the same scene size, and the same quality within noise.
    splat_render.uses_gsplat = lambda device: False
    cpu = _generate(photo, tmp_path / "cpu")
    assert len(cpu.gaussians) == len(result.gaussians)
    cpu_manifest = json.loads((tmp_path / "cpu" / "manifest.json").read_text())
    assert cpu_manifest["renderer"] == "cpu-tile-rasterizer"
    np.testing.assert_allclose(
        psnr_gpu["psnr_generation_views"], cpu_manifest["quality"]["psnr_generation_views"], atol=1.0
    )


@pytest.mark.slow
def test_refine_resume_with_another_strategy_is_one_clear_line(fake_gsplat, tmp_path):
    _generate(_photo(tmp_path), tmp_path / "run", steps=0)
    cfg = RefineConfig(steps=20, checkpoint_every=10, device="cpu")

    # Interrupt after the first checkpoint: run 10 of 20 steps by a progress callback that stops.
    def stop(step, total, loss, n):
        if step == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        refine_run(tmp_path / "run", cfg, progress=stop)
    # On a CPU machine "auto" means the project's BudgetStrategy: the checkpoint's gsplat state must not
    # reach it (it used to crash with IndexError inside the strategy).
    splat_render.uses_gsplat = lambda device: False
    with pytest.raises(
        StitchError, match="written with the DefaultStrategy strategy, this run uses BudgetStrategy"
    ):
        refine_run(tmp_path / "run", cfg)


def test_default_strategy_resets_opacity_and_prunes_oversized_within_a_1000_step_refine(fake_gsplat):
    strategy = make_strategy("default", device="cpu", steps=1000, n_initial=100)
    assert (strategy.refine_start_iter, strategy.refine_stop_iter, strategy.reset_every) == (100, 800, 300)
    g = _gaussians(100)
    with torch.no_grad():
        g.params["scales"][:5] = math.log(5.0)  # 5 oversized blobs (the others are ~0.15 m)
    params = g.params
    optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
    state = strategy.initialize_state(scene_scale=10.0)  # prune above 0.1 x 10 = 1 m
    strategy.grow_grad2d = 1e9  # no growth in this test: only the reset and the pruning are looked at
    from engine.trajectory import trajectory

    cam = trajectory("single", 32, 24)[0]

    def step(i):
        out = splat_render.render_camera(g, cam)
        strategy.step_pre_backward(params, optimizers, state, i, out.meta)
        out.rgb.sum().backward()
        strategy.step_post_backward(params, optimizers, state, i, out.meta, packed=False)

    step(300)  # an opacity reset step (gsplat 1.5.3's own test of it is never true)
    assert float(torch.sigmoid(params["opacities"]).max()) <= 0.01 + 1e-6
    with torch.no_grad():
        params["opacities"].fill_(2.0)
    n = len(params["means"])
    step(400)  # past reset_every: oversized Gaussians are pruned
    assert len(params["means"]) == n - 5
    assert float(params["scales"].exp().max()) < 5.0


def test_mcmc_regularisers_are_gsplats_trainer_weights():
    g = _gaussians(10)
    with torch.no_grad():
        g.params["opacities"].fill_(0.0)  # sigmoid 0.5
        g.params["scales"].fill_(math.log(0.2))
    assert float(mcmc_regularizers(g.params)) == pytest.approx(0.01 * 0.5 + 0.01 * 0.2)
