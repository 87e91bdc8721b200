"""Cameras: projection round trips, real cross-view warps, trajectories and the JSON path format."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from engine.trajectory import FULL_360_YAWS, trajectory
from splat.cameras import Camera, project_points, unproject_depth, warp_depth
from splat.errors import CameraPathError
from splat.formats.camera_path import cameras_from_json, load_camera_path, save_camera_path


def _random_camera(rng: np.random.Generator, w: int = 64, h: int = 48) -> Camera:
    from splat.cameras import intrinsics, pose_to_world_to_camera, rotation_ypr

    R = rotation_ypr(*rng.uniform(-40, 40, size=3))
    return Camera(w, h, intrinsics(w, h, 55.0), pose_to_world_to_camera(R, rng.normal(size=3)))


def test_unproject_then_project_lands_on_the_same_pixels(rng):
    cam = _random_camera(rng)
    depth = rng.uniform(0.5, 20.0, size=(cam.height, cam.width))
    points = unproject_depth(cam, depth)
    uv, z = project_points(cam, points)
    u, v = np.meshgrid(np.arange(cam.width) + 0.5, np.arange(cam.height) + 0.5)
    np.testing.assert_allclose(uv[:, 0], u.ravel(), atol=1e-4)
    np.testing.assert_allclose(uv[:, 1], v.ravel(), atol=1e-4)
    np.testing.assert_allclose(z, depth.ravel(), rtol=1e-9)


def _load_7scenes_frame(root, index: int):
    stem = root / f"frame-{index:06d}"
    depth = np.asarray(Image.open(f"{stem}.depth.png"), dtype=np.float64) / 1000.0
    depth[depth >= 65.535] = 0.0
    c2w = np.loadtxt(f"{stem}.pose.txt")
    K = np.array([[585.0, 0, 320.0], [0, 585.0, 240.0], [0, 0, 1]])
    return Camera(640, 480, K, np.linalg.inv(c2w)), depth


def test_real_depth_warps_across_views_redkitchen(shared_data):
    """7-Scenes frame 8's depth, warped into frame 18 with the given poses, agrees with frame 18's depth."""
    root = shared_data / "rgbd" / "redkitchen_dev"
    cam8, d8 = _load_7scenes_frame(root, 8)
    cam18, d18 = _load_7scenes_frame(root, 18)
    warped = warp_depth(cam8, d8, cam18)
    both = (warped > 0) & (d18 > 0)
    assert both.mean() > 0.5, "frames 8 and 18 should overlap on most pixels"
    rel = np.abs(warped[both] - d18[both]) / d18[both]
    assert np.median(rel) < 0.03


def test_paper_trajectories():
    stage = trajectory("stage", 720, 480)
    assert len(stage) == 3 and stage[0].focal == 720
    np.testing.assert_allclose(stage[0].world_to_camera, np.eye(4))
    assert len(trajectory("360", 720, 480)) == 13 == len(FULL_360_YAWS)
    # As the release: the second view (azimuth +25) turns LEFT, the third right; the centre stays put.
    forward = stage[1].camera_to_world[:3, 2]
    np.testing.assert_allclose(
        forward, [-math.sin(math.radians(25)), 0, math.cos(math.radians(25))], atol=1e-12
    )
    np.testing.assert_allclose(stage[1].center, 0, atol=1e-12)
    assert stage[2].camera_to_world[0, 2] > 0
    assert FULL_360_YAWS[-2:] == (-272.5, -316.25)


def test_stage_left_view_lands_where_the_release_puts_it():
    # The release's +25 view's optical axis lands at column ~24 of the 720-px photo (measured on the
    # release): 360 - 720 tan(25 deg) = 24.26; the third view's at 720 - 24.26 = 695.74.
    photo, left, right = trajectory("stage", 720, 480)
    far = np.stack([left.camera_to_world[:3, 2], right.camera_to_world[:3, 2]]) * 10.0
    uv, _ = project_points(photo, far)
    np.testing.assert_allclose(uv[:, 0], [24.26, 695.74], atol=0.01)
    np.testing.assert_allclose(uv[:, 1], 240.0, atol=1e-9)


def test_360_turns_left_by_the_release_azimuths():
    cams = trajectory("360", 64, 48)
    # Heading measured from +z towards -x (left), in degrees, unwrapped: 0, 25, ..., 250, 272.5, 316.25.
    heading = [
        math.degrees(math.atan2(-c.camera_to_world[0, 2], c.camera_to_world[2, 2])) % 360 for c in cams
    ]
    np.testing.assert_allclose(heading, [*[25.0 * i for i in range(11)], 272.5, 316.25], atol=1e-9)


def test_json_path_keeps_its_documented_convention_positive_yaw_turns_right(tmp_path):
    # JSON paths (hand-written, recorded by the viewer) keep "positive yaw turns right"; the release's left
    # view is {"yaw": -25} there.
    p = tmp_path / "path.json"
    p.write_text(json.dumps({"cameras": [{"yaw": 25}, {"yaw": -25}]}))
    right, left = load_camera_path(p, 720, 480)
    assert right.camera_to_world[0, 2] > 0 and left.camera_to_world[0, 2] < 0
    np.testing.assert_allclose(left.world_to_camera, trajectory("stage", 720, 480)[1].world_to_camera)


def test_orbit_looks_at_its_centre():
    cams = trajectory("orbit", 64, 48, n_views=5, arc_deg=40, center_depth=3.0)
    target = np.array([[0.0, 0.0, 3.0]])
    for cam in cams:
        uv, z = project_points(cam, target)
        np.testing.assert_allclose(uv[0], [32, 24], atol=1e-9)
        assert z[0] == pytest.approx(3.0)
    assert len({tuple(np.round(c.center, 6)) for c in cams}) == 5


def test_json_path_round_trip_and_hand_written_forms(tmp_path):
    cams = trajectory("stage", 80, 60)
    path = tmp_path / "path.json"
    save_camera_path(cams, path)
    back = load_camera_path(path, 160, 120)  # another resolution: focal scales with the width
    assert back[0].focal == pytest.approx(160.0)
    for a, b in zip(cams, back, strict=True):
        np.testing.assert_allclose(a.world_to_camera, b.world_to_camera, atol=1e-12)
    # JSON yaw turns right, so the stage's second (left) view is yaw -25 there.
    hand = {"cameras": [{"yaw": 0}, {"yaw": -25}, {"look_at": [0, 0, 3], "position": [0.5, 0, 0]}]}
    hand_cams = cameras_from_json(hand, 80, 60)
    np.testing.assert_allclose(hand_cams[1].world_to_camera, cams[1].world_to_camera, atol=1e-12)


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"cameras": []}, "non-empty"),
        ({"cameras": [{"pitch": "up"}]}, "finite number"),
        ({"cameras": [{"yaw": float("nan")}]}, "finite number"),
        ({"cameras": [{"position": [0, 0, 0]}]}, "needs one of"),
        ({"cameras": [{"world_to_camera": [[0] * 4] * 4}]}, "invertible"),
        ({"cameras": [{"world_to_camera": [[1, 0], [0, 1]]}]}, "shape"),
        ([1, 2], "object"),
    ],
)
def test_bad_camera_paths_name_the_problem(payload, needle, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(CameraPathError, match=needle):
        load_camera_path(path, 64, 48)


def test_unknown_mode_and_missing_file(tmp_path):
    with pytest.raises(CameraPathError, match="unknown mode"):
        trajectory("spiral", 64, 48)
    with pytest.raises(CameraPathError, match="does not exist"):
        load_camera_path(tmp_path / "nope.json", 64, 48)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(CameraPathError, match="not valid JSON"):
        load_camera_path(tmp_path / "broken.json", 64, 48)
