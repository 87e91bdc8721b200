"""`stitch video`: the path is smooth and passes through the cameras in a sensible order; frames are encoded
to a real mp4 (or a GIF when there is no encoder)."""

from __future__ import annotations

import itertools
import subprocess

import numpy as np
import pytest
import torch

import engine.tools.video as video
from engine.tools.video import make_video, pose_distance, smooth_path, tour_order, write_video
from engine.trajectory import trajectory, yaw_cameras
from splat.errors import StitchError
from splat.formats.io import save_scene
from splat.gaussians import Gaussians


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _yaw(cam) -> float:
    r = cam.camera_to_world[:3, :3]
    return float(np.degrees(np.arctan2(r[0, 2], r[2, 2])))


def test_stage_cameras_are_visited_left_to_right_not_back_and_forth():
    cams = trajectory("stage", 64, 48)  # photo, left, right (yaws 0, -25, +25)
    order = tour_order(cams)
    assert [round(_yaw(cams[i])) for i in order] in ([-25, 0, 25], [25, 0, -25])
    orbit = trajectory("360", 64, 48)
    assert tour_order(orbit) == list(range(len(orbit)))  # already a sensible loop


def test_path_is_smooth_and_passes_through_every_keyframe():
    keys = yaw_cameras([-25.0, 0.0, 25.0], 64, 48)
    path = smooth_path(keys, 61)
    assert _yaw(path[0]) == pytest.approx(-25.0, abs=1e-6) and _yaw(path[-1]) == pytest.approx(25.0, abs=1e-6)
    assert min(abs(_yaw(c)) for c in path) < 0.5  # passes the middle camera
    yaws = np.array([_yaw(c) for c in path])
    assert (np.diff(yaws) > 0).all()  # no back-tracking
    steps = [pose_distance(a, b, 1.0) for a, b in itertools.pairwise(path)]
    assert max(steps) < np.radians(2.0)  # no jumps between frames
    accel = np.abs(np.diff(np.diff(yaws)))
    assert accel.max() < 0.1  # degrees per frame^2: smooth


def _tiny_scene(tmp_path):
    u, v = np.meshgrid(np.linspace(-3, 3, 40), np.linspace(-2, 2, 30))
    pts = np.stack([u.ravel(), v.ravel(), np.full(u.size, 4.0)], 1)
    cols = np.stack([0.5 + 0.4 * np.sin(u.ravel()), 0.5 + 0.4 * np.cos(v.ravel()), np.full(u.size, 0.5)], 1)
    path = tmp_path / "scene.ply"
    save_scene(Gaussians.from_points(pts, cols, sh_degree=0), path)
    return path


def test_mp4_of_a_scene_has_the_frames_and_is_not_black(tmp_path):
    if not video.ffmpeg_available():
        pytest.skip("imageio-ffmpeg is not installed")
    import imageio_ffmpeg

    out = make_video(_tiny_scene(tmp_path), tmp_path / "fly.mp4", frames=12, fps=12, width=64, progress=False)
    assert out.suffix == ".mp4" and out.read_bytes()[4:8] == b"ftyp"
    decode = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-v",
        "error",
        "-i",
        str(out),
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    ]
    raw = subprocess.run(decode, capture_output=True, check=True, timeout=60).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, 48, 64, 3)
    assert len(frames) == 12
    assert np.mean(frames[6]) > 40  # the plane is visible, not an empty render


def test_without_an_encoder_a_gif_is_written_with_a_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(video, "ffmpeg_available", lambda: False)
    frames = [np.full((8, 10, 3), i * 20, np.uint8) for i in range(5)]
    out = write_video(iter(frames), tmp_path / "fly.mp4", fps=10)
    assert out == tmp_path / "fly.gif" and out.read_bytes()[:6] == b"GIF89a"
    assert "no mp4 encoder" in capsys.readouterr().err
    folder = write_video(iter(frames), tmp_path / "frames", fps=10)
    assert len(list(folder.glob("frame_*.png"))) == 5
    with pytest.raises(StitchError, match=r"\.mp4"):
        write_video(iter(frames), tmp_path / "fly.avi", fps=10)


def test_bad_video_options_are_refused(tmp_path):
    scene = _tiny_scene(tmp_path)
    with pytest.raises(StitchError, match="frames"):
        make_video(scene, tmp_path / "a.mp4", frames=1)
    with pytest.raises(StitchError, match="neither"):
        make_video(tmp_path / "missing.ply", tmp_path / "a.mp4")
