"""`stitch refine` on a tiny real run: PSNR rises, the report is complete, resume is exact, bad input is
one line; the held-out references are built from the views' own pixels and depth."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from engine.config import GenerateConfig, OptimConfig
from engine.run import run_generate
from engine.tools.quality_report import jitter_camera, reproject
from engine.tools.refine import RefineConfig, refine_run
from engine.tools.refine_checkpoint import RefineCheckpoint
from engine.tools.refine_inputs import load_run
from engine.trajectory import yaw_cameras
from splat.errors import StitchError
from splat.formats.io import load_scene

REPO = Path(__file__).resolve().parents[1]
TINY = RefineConfig(steps=24, checkpoint_every=8)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def seed_run(kyoto, tmp_path_factory) -> Path:
    """A finished stage run of the Kyoto photo at 48 px with unoptimised seed Gaussians (--steps 0)."""
    root = tmp_path_factory.mktemp("seed_run")
    config = GenerateConfig(photo=kyoto, mode="stage", max_side=48, optim=OptimConfig(steps_per_view=0))
    run_generate(config, output=root / "scene.ply", quiet=True)
    return root


def _copy(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst)
    return dst


def test_refine_raises_psnr_and_writes_a_complete_report(seed_run, tmp_path):
    root = _copy(seed_run, tmp_path / "run")
    result = refine_run(root, TINY)
    report = json.loads((root / "quality.json").read_text())
    before, after = report["before"], report["after"]
    assert len(after["generation_views"]["rows"]) == 3
    assert len(after["held_out_cameras"]["rows"]) == 6  # two jittered cameras per view
    assert all(r["pixels"] > 0 and 0 < r["ssim"] <= 1 for r in after["held_out_cameras"]["rows"])
    gain = report["gain_db"]["generation_views"]
    assert gain > 1.0, report["gain_db"]
    assert after["generation_views"]["mean_ssim"] > before["generation_views"]["mean_ssim"]
    refined = load_scene(root / "refined.ply")
    assert len(refined) == after["n_gaussians"] == len(result.gaussians)
    assert report["refine"]["n_gaussians_after"] <= int(1.25 * report["refine"]["n_gaussians_before"])


def test_interrupted_refine_resumes_to_the_same_scene(seed_run, tmp_path):
    whole = _copy(seed_run, tmp_path / "whole")
    refine_run(whole, TINY)
    parts = _copy(seed_run, tmp_path / "parts")

    def stop_at_13(step, total, loss, n):
        if step == 13:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        refine_run(parts, TINY, progress=stop_at_13)
    state = json.loads((parts / "refine" / "state.json").read_text())
    assert state["step"] == 13  # Ctrl-C saved where it stopped
    result = refine_run(parts, TINY)
    assert result.resumed_from == 13
    a, b = load_scene(whole / "refined.ply"), load_scene(parts / "refined.ply")
    for key in a.params:
        assert torch.equal(a.params[key], b.params[key]), key


def test_other_settings_need_restart(seed_run, tmp_path):
    root = _copy(seed_run, tmp_path / "run")
    refine_run(root, RefineConfig(steps=4, checkpoint_every=2))
    with pytest.raises(StitchError, match="--restart"):
        refine_run(root, RefineConfig(steps=6, checkpoint_every=2))
    refine_run(root, RefineConfig(steps=6, checkpoint_every=2), restart=True)
    assert json.loads(RefineCheckpoint(root).state_path.read_text())["step"] == 6


def test_unfinished_or_foreign_directories_are_refused(seed_run, tmp_path):
    with pytest.raises(StitchError, match="manifest"):
        refine_run(tmp_path, TINY)
    root = _copy(seed_run, tmp_path / "run")
    state = root / "checkpoint" / "state.json"
    data = json.loads(state.read_text())
    state.write_text(json.dumps({**data, "views_done": 2}))
    with pytest.raises(StitchError, match="--resume"):
        load_run(root)


def test_cli_refine_and_its_errors(seed_run, tmp_path):
    root = _copy(seed_run, tmp_path / "run")
    ok = CliRunner().invoke(app, ["refine", str(root), "--steps", "3", "-q"])
    assert ok.exit_code == 0, ok.output
    assert "PSNR gain" in ok.output and (root / "quality.json").is_file()
    cmd = [sys.executable, str(REPO / "cli.py"), "refine", str(root), "--strategy", "mcmc", "--restart"]
    bad = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--strategy cpu" in bad.stderr


def _plane_view(cam, z: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Image and z-depth of a textured plane Z = z seen by `cam`, evaluated exactly per pixel centre."""
    u, v = np.meshgrid(np.arange(cam.width) + 0.5, np.arange(cam.height) + 0.5)
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(cam.K).T  # camera frame, z = 1
    c2w = cam.camera_to_world
    d = rays @ c2w[:3, :3].T
    t = (z - c2w[2, 3]) / d[..., 2]
    X = c2w[:3, 3] + d * t[..., None]
    image = np.stack([0.5 + 0.4 * np.sin(1.5 * X[..., 0]), 0.5 + 0.4 * np.cos(X[..., 1]), 0.3 + 0 * t], -1)
    depth = t  # rays have camera z = 1, so the ray parameter is the z-depth
    return image.astype(np.float32), depth.astype(np.float32)


def test_reprojection_reference_matches_the_exact_view_from_the_jittered_camera():
    """A textured plane: reprojecting one view's pixels with its depth reproduces the exact image seen from
    a jittered camera on the pixels it marks valid."""
    cam = yaw_cameras([0.0], 48, 36)[0]
    image, depth = _plane_view(cam)
    jc = jitter_camera(cam, np.random.default_rng(1), degrees=2.0, shift=0.08)
    ref, valid = reproject(image, depth, np.ones((36, 48), bool), cam, jc)
    truth, _ = _plane_view(jc)
    assert valid.mean() > 0.8
    assert np.abs(ref - truth)[valid].mean() < 0.005
    same, same_valid = reproject(image, depth, np.ones((36, 48), bool), cam, cam)
    assert np.abs(same - image)[same_valid].max() < 1e-4 and same_valid[2:-2, 2:-2].all()
