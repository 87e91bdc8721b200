"""`stitch view`: loading a real run directory of `stitch generate` (and its scene file) into the viewer."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("viser")

from engine.config import PRESETS, OptimConfig
from splat.cameras import Camera
from splat.errors import StitchError
from viewer.saved import serve_saved
from viewer.saved_scene import load_saved


@pytest.fixture(scope="module")
def run_dir(kyoto, tmp_path_factory):
    """A real (tiny) run of the offline pipeline: 3 views of the Kyoto street at 48 px."""
    from engine.run import run_generate

    root = tmp_path_factory.mktemp("run")
    config = dataclasses.replace(
        PRESETS["offline"], photo=kyoto, max_side=48, optim=OptimConfig(steps_per_view=2)
    )
    run_generate(config, run_dir=root, quiet=True)
    return root


def test_run_directory_loads_scene_cameras_and_view_images(run_dir):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    saved = load_saved(run_dir)
    assert len(saved.gaussians["means"]) == manifest["n_gaussians"]
    assert len(saved.cameras) == len(manifest["cameras"]) == 3
    for cam, d in zip(saved.cameras, manifest["cameras"], strict=True):
        np.testing.assert_array_equal(cam.world_to_camera, Camera.from_dict(d).world_to_camera)
    assert sorted(saved.images) == [0, 1, 2]
    w, h = manifest["image_size"]
    assert saved.images[1].shape == (h, w, 3) and saved.images[1].dtype == np.uint8
    assert saved.directory == run_dir.resolve()
    assert "scene.ply" in saved.summary and f"{manifest['n_gaussians']:,} Gaussians" in saved.summary


def test_scene_file_alone_and_an_unfinished_run(run_dir, tmp_path):
    alone = load_saved(run_dir / "scene.ply")
    assert len(alone.gaussians["means"]) == len(load_saved(run_dir).gaussians["means"])
    assert alone.cameras == [] and alone.images == {}
    # A run stopped before writing scene.ply still shows its latest checkpoint.
    partial = tmp_path / "partial"
    shutil.copytree(run_dir, partial)
    (partial / "scene.ply").unlink()
    manifest = json.loads((partial / "manifest.json").read_text())
    manifest.pop("exports", None)
    (partial / "manifest.json").write_text(json.dumps(manifest))
    saved = load_saved(partial)
    assert "checkpoint after 3 views" in saved.summary and len(saved.cameras) == 3


def test_bad_paths_say_what_to_do(tmp_path):
    with pytest.raises(StitchError, match="does not exist"):
        load_saved(tmp_path / "missing.ply")
    with pytest.raises(StitchError, match="not a run directory"):
        load_saved(tmp_path)
    (tmp_path / "junk.ply").write_bytes(b"not a ply")
    with pytest.raises(StitchError, match=r"junk\.ply"):
        load_saved(tmp_path / "junk.ply")
    from cli import app

    result = CliRunner().invoke(app, ["view", str(tmp_path / "missing.ply")])
    assert isinstance(result.exception, StitchError)


def test_viewer_on_a_run_shows_cameras_and_saves_paths_into_the_run(run_dir):
    viewer = serve_saved(run_dir, port=0, block=False)
    try:
        assert viewer.wait_idle(30)
        names = set(viewer.server.scene._handle_from_node_name)
        assert {"/cameras/view_000", "/cameras/view_001", "/cameras/view_002"} <= names
        assert "/scene/splats/chunk_000" in names
        assert all(viewer.scene.frustum_handles[i].image is not None for i in range(3))
        assert "scene.ply" in viewer.panel.status.content
        # A folder of its own inside the run: never over manifest.json or another run file (issue 20).
        assert viewer.recorder.directory == run_dir.resolve() / "paths"
        assert viewer.recorder.size == (viewer.scene.cameras[0].width, viewer.scene.cameras[0].height)
        with pytest.raises(StitchError, match="not allowed"):
            viewer.recorder.save("../escape.json")
        with pytest.raises(StitchError, match="not allowed"):
            viewer.recorder.save("manifest.json")
    finally:
        viewer.stop()
