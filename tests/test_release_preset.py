"""`--preset release`: the release's own generation beside `paper` (issue 16, items 5-6)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from engine.backends.depth_classical import ClassicalDepthCompleter
from engine.backends.outpaint_classical import ClassicalOutpainter
from engine.config import PRESETS, RELEASE_OPACITY, generate_config_from_cli
from engine.pipeline import StitchPipeline
from engine.trajectory import trajectory
from splat.gaussians import knn_mean_distance


def test_release_preset_says_what_the_release_does():
    r, p = PRESETS["release"], PRESETS["paper"]
    assert (r.outpainter, r.depth_backend, r.max_side) == ("sd2-avae", "invisible-stitch", 720)
    assert pytest.approx(1 / (1 + math.exp(-1))) == RELEASE_OPACITY  # sigmoid(1) = 0.731
    assert (r.fusion.scale_rule, r.fusion.scale_factor, r.fusion.first_opacity) == (
        "rms",
        1.0,
        RELEASE_OPACITY,
    )
    o = r.optim
    assert (o.steps_per_view, o.final_steps, o.trust, o.pose_refine) == (0, 990, "all", True)
    assert o.lr_means == 0.0 and o.lr_opacities == 0.0 and o.ssim_weight == 0.2 and o.min_sigma_px == 0.0
    # paper stays the improved method: per-view optimisation on trusted pixels, no final-only schedule.
    assert p.optim.steps_per_view > 0 and p.optim.trust == "new" and p.fusion.scale_rule == "mean"


def test_steps_flag_sets_the_final_optimisation_of_the_release_preset():
    kw = dict(photo=None, prompt="", mode="stage", path=None, seed=0, max_side=384, depth_file=None,
              outpainter="", depth_backend="", model_path=None)  # fmt: skip
    assert generate_config_from_cli(steps=7, preset="release", **kw).optim.final_steps == 7
    assert generate_config_from_cli(steps=-1, preset="release", **kw).optim.final_steps == 990
    assert generate_config_from_cli(steps=7, preset="paper", **kw).optim.steps_per_view == 7


def _image(h=40, w=56):
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(0)
    return np.stack([xx / w, yy / h, 0.4 + 0.2 * rng.random((h, w))], -1).astype(np.float32)


def _run(optim, fusion, cams):
    torch.manual_seed(0)
    pipe = StitchPipeline(ClassicalOutpainter(), ClassicalDepthCompleter(), fusion, optim, sh_degree=1)
    return pipe(_image(), cams, seed=0)


def test_release_schedule_freezes_positions_and_opacity_and_trains_colour_once_at_the_end():
    r = PRESETS["release"]
    cams = trajectory("stage", 56, 40)
    optim = dataclasses.replace(r.optim, final_steps=6)
    seeded = _run(dataclasses.replace(optim, final_steps=0), r.fusion, cams)
    out = _run(optim, r.fusion, cams)
    g0, g1 = seeded.gaussians.params, out.gaussians.params
    assert len(out.gaussians) == len(seeded.gaussians)  # no densification
    torch.testing.assert_close(g1["means"], g0["means"], rtol=0, atol=0)  # positions frozen
    logit = math.log(RELEASE_OPACITY / (1 - RELEASE_OPACITY))
    torch.testing.assert_close(g1["opacities"], torch.full_like(g1["opacities"], logit))  # sigmoid(1) fixed
    assert (g1["sh0"] - g0["sh0"]).abs().max() > 1e-4  # colours did train, in the final optimisation
    assert "final_optimize" in out.timings[-1] and "optimize" in out.timings[0]
    # Sizes: the RMS distance to the 3 nearest neighbours of the first view's points, x 1.
    n0 = out.timings[0]["n_new"]
    pts = g0["means"][:n0].detach().numpy().astype(np.float64)
    np.testing.assert_allclose(
        torch.exp(g0["scales"][:n0, 0]).detach().numpy(), knn_mean_distance(pts, rms=True), rtol=1e-5
    )


@pytest.mark.slow
def test_stitch_generate_preset_release_end_to_end_with_tiny_models(tmp_path, monkeypatch):
    pytest.importorskip("diffusers")
    from tiny_learned_models import make_tiny_asymmetric_vae, make_tiny_completion, make_tiny_inpaint_pipeline
    from typer.testing import CliRunner

    from cli import app
    from completion.network.checkpoint import save_original_checkpoint
    from completion.network.model import DepthCompletionModel

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.delenv("STITCH_MODEL_PATH", raising=False)
    torch.set_num_threads(1)
    root = tmp_path / "models"
    make_tiny_inpaint_pipeline(root / "sd2-community" / "stable-diffusion-2-inpainting")
    make_tiny_asymmetric_vae(root / "cross-attention" / "asymmetric-autoencoder-kl-x-2")
    model = DepthCompletionModel.from_pretrained(make_tiny_completion(tmp_path / "net"))
    ckpt = root / "paulengstler" / "invisible-stitch"
    ckpt.mkdir(parents=True)
    save_original_checkpoint(model, ckpt / "invisible-stitch.pt")
    (ckpt / "config.json").write_text(json.dumps(model.config.to_json_dict()))
    photo = tmp_path / "photo.png"
    Image.fromarray((_image(48, 68) * 255).astype(np.uint8)).save(photo)  # 68 px: cropped to 64
    run_dir = tmp_path / "run"
    args = ["generate", str(photo), "--preset", "release", "--model-path", str(root), "--mode", "stage",
            "--steps", "3", "--outpaint-steps", "2", "--prompt", "a room", "--quiet",
            "--run-dir", str(run_dir), "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["config"]["preset"] == "release"
    assert manifest["image_size"] == [64, 48]  # native size, cropped to multiples of 8
    assert manifest["config"]["optim"]["final_steps"] == 3 and manifest["device"] == "cpu"
    assert manifest["backends"]["outpainter"]["backend"] == "diffusion"
    assert manifest["backends"]["depth"]["backend"] == "invisible-stitch"
    assert "final_optimize" in manifest["timings"][-1]
