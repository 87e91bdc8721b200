"""`stitch extend` and the viewer's Stitch here: a finished run grows by a view where the user looks, the
hole there is filled, the run stays resumable and replayable, Undo restores it byte-for-byte, and the guard
rails refuse cameras that cannot add anything."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli import app, main
from engine.config import GenerateConfig, OptimConfig
from engine.extend.grow import extend_run
from engine.extend.guard import ViewRefusedError, check_camera
from engine.extend.state import cameras_from_options, read_run
from engine.extend.undo import undo_last
from engine.run import run_generate
from splat.errors import StitchError
from splat.formats.camera_path import load_camera_path, save_camera_path
from splat.formats.io import load_scene
from splat.render import render_camera

MAX_SIDE, STEPS, PROMPT = 64, 3, "a street"


@pytest.fixture(scope="module")
def finished(kyoto, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finished") / "run"
    config = GenerateConfig(photo=kyoto, prompt=PROMPT, max_side=MAX_SIDE, optim=OptimConfig(STEPS))
    run_generate(config, run_dir=root, quiet=True)
    return root


@pytest.fixture
def run(finished, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def coverage(scene: Path, camera) -> float:
    """Fraction of the camera's view the scene covers (alpha > 0.5): 1 - the hole."""
    with torch.no_grad():
        alpha = render_camera(load_scene(scene), camera, background=torch.zeros(3)).alpha[0, ..., 0]
    return float((alpha > 0.5).float().mean())


def extend_cli(*args: str):
    return CliRunner().invoke(app, ["extend", *args, "--quiet"])


def test_extend_fills_the_view_and_undo_restores_the_run_byte_for_byte(run):
    before = files_of(run)
    camera = cameras_from_options(read_run(run), yaw=60.0)[0]
    hole_before = 1 - coverage(run / "scene.ply", camera)
    n_before = json.loads((run / "manifest.json").read_text())["n_gaussians"]
    result = extend_cli(str(run), "--yaw", "60")
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "added view 4 (views/view_003.png)" in result.output and "--undo" in result.output
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "finished" and len(manifest["cameras"]) == 4
    (ext,) = manifest["extensions"]
    assert ext["view"] == 3 and ext["prompt"] == PROMPT and ext["seed"] == 3
    np.testing.assert_allclose(manifest["cameras"][3]["world_to_camera"], camera.world_to_camera)
    assert manifest["n_gaussians"] > n_before
    assert json.loads((run / "checkpoint" / "state.json").read_text())["views_done"] == 4
    for kind, suffix in (("view", ".png"), ("image", ".npy"), ("depth", ".npy"), ("new", ".png")):
        assert (run / "views" / f"{kind}_003{suffix}").is_file()
    # The camera looked at a two-thirds hole; the added view fills it.
    assert hole_before > 0.5
    assert 1 - coverage(run / "scene.ply", camera) < 0.02
    # The replay file names all four cameras with their prompts.
    path = json.loads((run / "camera_path.json").read_text())
    assert [c["prompt"] for c in path["cameras"]] == [PROMPT] * 4
    assert len(load_camera_path(run / "camera_path.json", 64, 43)) == 4

    result = extend_cli(str(run), "--undo")
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert files_of(run) == before  # every file back, byte for byte, and nothing left over


def test_a_path_adds_views_one_by_one_and_undo_takes_them_back_in_turn(run, tmp_path):
    state = read_run(run)
    before = files_of(run)
    save_camera_path([cameras_from_options(state, yaw=y)[0] for y in (60.0, -60.0)], tmp_path / "more.json")
    result = extend_cli(str(run), "--path", str(tmp_path / "more.json"))
    assert result.exit_code == 0, result.output + repr(result.exception)
    after_one = json.loads((run / "manifest.json").read_text())
    assert [e["view"] for e in after_one["extensions"]] == [3, 4] and len(after_one["cameras"]) == 5
    assert undo_last(run) == 4
    assert [e["view"] for e in json.loads((run / "manifest.json").read_text())["extensions"]] == [3]
    assert not (run / "views" / "view_004.png").exists() and (run / "views" / "view_003.png").exists()
    assert undo_last(run) == 3
    assert files_of(run) == before


def test_an_extended_run_equals_generate_over_its_camera_path(run, kyoto, tmp_path):
    """Reproducible: growing a run view by view gives the scene `generate --path` makes in one go."""
    assert extend_cli(str(run), "--yaw", "55", "--pitch", "5").exit_code == 0
    replay = tmp_path / "replay"
    config = GenerateConfig(
        photo=kyoto, prompt=PROMPT, max_side=MAX_SIDE, optim=OptimConfig(STEPS), path=run / "camera_path.json"
    )
    run_generate(config, run_dir=replay, quiet=True)
    assert (replay / "scene.ply").read_bytes() == (run / "scene.ply").read_bytes()


@pytest.mark.parametrize("when", ["view_added", "run_finished"])  # before / after the view's checkpoint
def test_a_killed_extension_is_finished_by_running_extend_again(run, finished, tmp_path, when):
    camera = cameras_from_options(read_run(run), yaw=-60.0)

    def die(event):
        if event.kind == when:
            raise KeyboardInterrupt  # Ctrl-C mid-view: the manifest already names the camera

    with pytest.raises(KeyboardInterrupt):
        extend_run(run, camera, callbacks=[die])
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "extending" and len(manifest["cameras"]) == 4
    assert not (run / ".extend.lock").exists()
    # A new camera is refused until the interrupted one is finished ...
    with pytest.raises(StitchError, match="unfinished added view"):
        extend_run(run, camera)
    # ... and `stitch extend RUN` alone finishes it, to the scene an uninterrupted extension makes.
    assert extend_cli(str(run)).exit_code == 0
    reference = tmp_path / "reference"
    shutil.copytree(finished, reference)
    extend_run(reference, camera)
    assert (run / "scene.ply").read_bytes() == (reference / "scene.ply").read_bytes()
    assert json.loads((run / "manifest.json").read_text())["status"] == "finished"
    # generate --resume does not know the added cameras and says where to go.
    with pytest.raises(StitchError, match="stitch extend"):
        run_generate(GenerateConfig(), resume=run, quiet=True)


def test_guard_rails_refuse_cameras_that_add_nothing(run):
    state = read_run(run)
    # Looking where the stage views already looked: nothing new.
    with pytest.raises(ViewRefusedError, match="sees nothing new"):
        check_camera(state, cameras_from_options(state, yaw=0.0)[0])
    # Turned round: nothing of the scene to continue.
    with pytest.raises(ViewRefusedError, match="faces away"):
        check_camera(state, cameras_from_options(state, yaw=180.0)[0])
    # Through the street's far wall: inside the geometry.
    with pytest.raises(ViewRefusedError, match="inside the scene's geometry"):
        check_camera(state, cameras_from_options(state, yaw=0.0, move=(0.0, 0.0, 12.0))[0])
    ok = check_camera(state, cameras_from_options(state, yaw=60.0)[0])
    assert 0.1 < ok.covered < 0.6 and ok.new > 0.4
    # A full Gaussian budget: nothing can be added.
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"]["fusion"]["max_gaussians"] = manifest["n_gaussians"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ViewRefusedError, match="Gaussian budget"):
        check_camera(read_run(run), cameras_from_options(state, yaw=60.0)[0])


def test_refusals_are_one_line_exit_2_and_change_nothing(run, tmp_path, monkeypatch, capsys):
    before = files_of(run)
    cases = [
        (["--yaw", "180"], "faces away"),
        (["--yaw", "60", "--path", str(tmp_path / "x.json")], "not both"),
        (["--move", "1,2"], "three numbers"),
        (["--undo"], "no added views"),
        ([], "no cameras to add"),
    ]
    for args, message in cases:
        monkeypatch.setattr(sys, "argv", ["stitch", "extend", str(run), *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, (args, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in err, (args, lines)
        assert files_of(run) == before


def test_a_run_still_generating_cannot_be_extended(run):
    camera = cameras_from_options(read_run(run), yaw=60.0)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["status"] = "running"  # what `generate --view` shows while it works
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StitchError, match="not finished yet"):
        extend_run(run, camera)


def test_the_gaussian_budget_applies_to_added_views(kyoto, tmp_path):
    config = GenerateConfig(photo=kyoto, prompt=PROMPT, max_side=MAX_SIDE, optim=OptimConfig(STEPS))
    config = dataclasses.replace(
        config, mode="single", fusion=dataclasses.replace(config.fusion, max_gaussians=2000)
    )
    root = tmp_path / "budget"
    run_generate(config, run_dir=root, quiet=True)
    result = extend_run(root, cameras_from_options(read_run(root), yaw=50.0))
    assert result.n_before < result.n_after <= 2000


def test_undo_of_the_planned_views_is_refused(run):
    with pytest.raises(StitchError, match="no added views"):
        undo_last(run)


@pytest.mark.slow  # loading diffusers/transformers models: about 2 minutes on a busy 2-core machine
def test_learned_backends_extend_through_the_same_path(tmp_path, monkeypatch):
    """Tiny random diffusion inpainter + completion network (saved and loaded as users' models are)."""
    from PIL import Image
    from tiny_learned_models import make_tiny_completion, make_tiny_inpaint_pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    photo = tmp_path / "photo.png"
    yy, xx = np.mgrid[0:48, 0:64]
    Image.fromarray((np.stack([xx / 64, yy / 48, 0.5 + 0 * xx], -1) * 255).astype(np.uint8)).save(photo)
    config = GenerateConfig(
        photo=photo,
        prompt="a room",
        mode="single",
        max_side=64,
        outpainter=str(make_tiny_inpaint_pipeline(tmp_path / "sd")),
        outpaint_steps=2,
        depth_backend=f"network:{make_tiny_completion(tmp_path / 'net')}",
        optim=OptimConfig(1),
    )
    root = tmp_path / "run"
    run_generate(config, run_dir=root, quiet=True)
    result = extend_run(root, cameras_from_options(read_run(root), yaw=30.0), prompt="a wall")
    assert result.added == [1] and result.n_after > result.n_before
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["backends"]["outpainter"]["backend"] == "diffusion"
    assert manifest["backends"]["depth"]["backend"] == "network"
    assert manifest["extensions"][0]["prompt"] == "a wall"
    assert [c["prompt"] for c in json.loads((root / "camera_path.json").read_text())["cameras"]] == [
        "a room",
        "a wall",
    ]
    assert (root / "views" / "inpaint_001.png").is_file()
