"""Scenes stay opaque in other splat viewers, not only in stitch's renderer.

Web viewers draw thinner splats than stitch (PlayCanvas/SuperSplat: a 0.075 px^2 low-pass and no splat
drawn under 1 px; mkkellogg: eigenvalues pushed apart), and sample pixels where stitch did not train them.
The fast tests use the CPU stand-in of their rasterisers (benchmarks/bench_viewer_opacity.py, within 0.1
percentage points of the real viewers on the Kyoto stage scene); the slow one opens the real viewers in
headless Chromium when chromium and the harness's node_modules are present.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.config import FusionConfig, GenerateConfig
from engine.run import run_generate
from splat.cameras import Camera, intrinsics
from splat.gaussians import Gaussians
from splat.optimize import MIN_SIGMA_PX, Trainer
from splat.train_views import TrainView

REPO = Path(__file__).resolve().parents[1]
BOUND = 0.02  # the target: at most 2 % of the background shows through in PlayCanvas and mkkellogg


def _bench():
    spec = importlib.util.spec_from_file_location(
        "bench_viewer_opacity", REPO / "benchmarks/bench_viewer_opacity.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_viewer_opacity", module)
    spec.loader.exec_module(module)
    return module


bench = _bench()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _photo_scene(
    kyoto: Path, width: int = 48, scale_factor: float | None = None
) -> tuple[Camera, torch.Tensor, Gaussians]:
    """The Kyoto photo at `width` px, one Gaussian per pixel on a slanted plane, seeded as the pipeline
    seeds new pixels (FusionConfig's scale factor unless given, and its opacity)."""
    img = Image.open(kyoto).convert("RGB")
    height = round(width * img.height / img.width)
    rgb = np.asarray(img.resize((width, height), Image.BICUBIC), dtype=np.float32) / 255.0
    camera = Camera(width, height, intrinsics(width, height), np.eye(4))
    v, u = np.mgrid[0:height, 0:width] + 0.5
    z = 2.0 + 1.5 * v / height  # a floor-like slant: nearer at the top than the bottom
    points = np.stack([(u - width / 2) * z / width, (v - height / 2) * z / width, z], -1).reshape(-1, 3)
    fusion = FusionConfig()
    g = Gaussians.from_points(
        points,
        rgb.reshape(-1, 3),
        sh_degree=0,
        opacity=fusion.first_opacity,
        scale_factor=fusion.scale_factor if scale_factor is None else scale_factor,
    )
    return camera, torch.from_numpy(rgb), g


def _fit(camera: Camera, image: torch.Tensor, g: Gaussians, min_sigma_px: float | None) -> Gaussians:
    torch.manual_seed(0)
    trainer = Trainer(g, [TrainView(camera, image)], 30, background=torch.zeros(3), min_sigma_px=min_sigma_px)
    trainer.run(30)
    return trainer.gaussians


def _psnr(image: np.ndarray, reference: torch.Tensor) -> float:
    return float(-10 * np.log10(((np.clip(image, 0, 1) - reference.numpy()) ** 2).mean()))


def test_optimised_photo_scene_is_opaque_in_web_viewers_and_looks_like_the_photo(kyoto):
    camera, image, seed = _photo_scene(kyoto)
    _, _, old_seed = _photo_scene(kyoto, scale_factor=0.5)  # the seeding before the floor
    # Half a pixel off stitch's pixel centres: a viewer's pixel grid need not match the training one.
    # The seeds alone (a `--steps 0` run) are already opaque in PlayCanvas ...
    assert bench.proxy_show_through(seed, camera, "playcanvas", offset=0.5) <= BOUND
    floored = _fit(camera, image, seed.clone(), None)
    bare = _fit(camera, image, old_seed, 0.0)
    # ... and stay so through optimisation.
    through = {
        p: bench.proxy_show_through(floored, camera, p, offset=0.5) for p in ("playcanvas", "mkkellogg")
    }
    assert max(through.values()) <= BOUND, through
    # The old seeding without the floor lets the background through in PlayCanvas: the floor fixes it.
    assert bench.proxy_show_through(bare, camera, "playcanvas", offset=0.5) > 2 * BOUND
    # What a SuperSplat user sees from a camera half a pixel off: as bright as the photo (the background
    # no longer shows through and darkens it) and closer to it than without the floor ...
    shown = {
        name: bench.proxy_render(g, camera, "playcanvas", offset=0.5)
        for name, g in (("floored", floored), ("bare", bare))
    }
    brightness = {name: float(img.mean() / image.mean()) for name, img in shown.items()}
    assert abs(brightness["floored"] - 1.0) < 0.02 and brightness["bare"] < 0.95, brightness
    psnr = {name: _psnr(img, image) for name, img in shown.items()}
    assert psnr["floored"] > psnr["bare"] + 1.0, psnr
    # ... while stitch's own render there loses at most a little sharpness (its 0.3 px^2 low-pass blurs the
    # larger Gaussians more than the viewers' does).
    own = {
        name: _psnr(bench.proxy_render(g, camera, "stitch", offset=0.5), image)
        for name, g in (("floored", floored), ("bare", bare))
    }
    assert own["floored"] > own["bare"] - 1.5, own


def test_trainer_keeps_every_axis_above_the_pixel_floor():
    width = height = 32
    camera = Camera(width, height, intrinsics(width, height), np.eye(4))
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(-0.4, 0.4, (200, 2)), rng.uniform(1.0, 4.0, 200)])
    g = Gaussians.from_points(pts, rng.uniform(0, 1, (200, 3)), sh_degree=0, scale_factor=0.05)
    with torch.no_grad():  # needles: one axis far below a pixel
        g.params["scales"][:, 2] = -12.0
    image = torch.rand(height, width, 3, generator=torch.Generator().manual_seed(0))
    trainer = Trainer(g.clone(), [TrainView(camera, image)], 2)
    trainer.run(1)
    sigma_px = (
        trainer.gaussians.scales_linear().detach()
        * camera.focal
        / torch.from_numpy(pts).float().norm(dim=1)[:, None]
    )
    assert float(sigma_px.min()) >= MIN_SIGMA_PX * 0.999  # the floor is in pixels of the nearest camera
    off = Trainer(g.clone(), [TrainView(camera, image)], 2, min_sigma_px=0.0)
    off.run(1)
    assert float(off.gaussians.scales_linear()[:, 2].max()) < 1e-4  # 0 turns the floor off


@pytest.mark.slow
def test_generated_scene_is_opaque_in_real_web_viewers(kyoto, tmp_path):
    """Both real viewers in headless Chromium, on a generated stage scene; the CPU stand-in agrees."""
    if not bench.harness_ready():
        pytest.skip("needs chromium and `npm install` in benchmarks/viewer_opacity")
    ply = tmp_path / "scene.ply"
    run_generate(GenerateConfig(photo=kyoto, mode="stage", max_side=96), output=ply, quiet=True)
    camera = bench.photo_camera(ply)
    rows = bench.measure(ply, camera)
    for viewer in ("playcanvas", "mkkellogg"):
        assert rows[viewer]["show_through"] <= BOUND, {k: r["show_through"] for k, r in rows.items()}
        assert abs(rows[viewer]["proxy"] - rows[viewer]["show_through"]) < 0.01
        assert rows[viewer]["psnr_vs_stitch"] > 22.0  # the same picture: camera conventions match


@pytest.mark.slow
def test_splat_and_spz_exports_look_like_the_ply_in_a_web_viewer(kyoto, tmp_path):
    """antimatter15's .splat and Niantic's .spz as written by `generate --splat --spz`, opened in
    @mkkellogg/gaussian-splats-3d (which reads all three formats): the same picture as the .ply there, and
    as stitch's own render (the conversions keep positions, sizes, colours and axes)."""
    if not bench.harness_ready():
        pytest.skip("needs chromium and `npm install` in benchmarks/viewer_opacity")
    ply = tmp_path / "scene.ply"
    config = GenerateConfig(photo=kyoto, mode="stage", max_side=96)
    run_generate(config, output=ply, export_splat=True, export_spz=True, quiet=True)
    camera = bench.photo_camera(ply)
    shown = {
        s: bench.viewer_renders(ply.with_suffix(s), camera, "mkkellogg")["black"]
        for s in (".ply", ".splat", ".spz")
    }
    own = bench.stitch_renders(ply, camera)["black"]
    for suffix in (".splat", ".spz"):
        assert bench.psnr(shown[suffix], shown[".ply"]) > 35.0, suffix  # measured 41.0 / 45.1 dB
        assert bench.psnr(shown[suffix], own) > 22.0, suffix
    assert shown[".splat"].mean() > 40  # a picture, not an empty black canvas
