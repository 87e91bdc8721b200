"""Viewer conversions: Gaussians -> viser splats, stitch cameras <-> viser poses, recorded camera paths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from engine.trajectory import trajectory
from splat.cameras import Camera, look_at, project_points
from splat.formats.camera_path import load_camera_path, save_camera_path
from splat.gaussians import Gaussians
from viewer.convert import (
    camera_from_viser,
    camera_to_viser,
    chunk_slices,
    gaussians_to_splats,
    matrix_to_quat,
    overview_pose,
    preview_splats,
    quats_to_matrices,
    thumbnail,
)


def _random_gaussians(n: int, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    return Gaussians(
        {
            "means": torch.randn(n, 3, generator=g),
            "scales": torch.randn(n, 3, generator=g) * 0.5 - 3.0,
            "quats": torch.randn(n, 4, generator=g),
            "opacities": torch.randn(n, generator=g) * 2.0,
            "sh0": torch.randn(n, 1, 3, generator=g),
            "shN": torch.zeros(n, 3, 3),
        }
    )


def test_splats_match_an_independent_covariance_colour_and_opacity_reference():
    g = _random_gaussians(200)
    splats = gaussians_to_splats(g.tensors())
    q = g.params["quats"].detach().numpy().astype(np.float64)
    R = Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()  # scipy wants x, y, z, w
    var = np.exp(2.0 * g.params["scales"].detach().numpy().astype(np.float64))
    expected_cov = np.einsum("nij,nj,nkj->nik", R, var, R)
    np.testing.assert_allclose(splats.covariances, expected_cov, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(splats.rgbs, g.rgb().detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(splats.opacities[:, 0], g.opacities_linear().detach().numpy(), atol=1e-6)
    np.testing.assert_array_equal(splats.centers, g.means.detach().numpy())
    assert splats.centers.dtype == np.float32 and splats.opacities.shape == (200, 1)


def test_quaternion_helpers_round_trip_including_half_turns():
    rng = np.random.default_rng(1)
    quats = rng.normal(size=(100, 4))
    # Half turns about each axis stress the non-trace branches of the matrix -> quaternion conversion.
    quats = np.concatenate([quats, np.eye(4)[1:], [[0.0, 1.0, 1.0, 0.0]]])
    mats = quats_to_matrices(quats)
    np.testing.assert_allclose(
        mats @ np.swapaxes(mats, 1, 2), np.broadcast_to(np.eye(3), mats.shape), atol=1e-12
    )
    for R in mats:
        np.testing.assert_allclose(quats_to_matrices(matrix_to_quat(R)[None])[0], R, atol=1e-12)
    assert np.allclose(quats_to_matrices(np.zeros((1, 4)))[0], np.eye(3))  # zero quaternion -> identity


def test_budget_keeps_at_most_the_budget_and_widens_kept_splats():
    tensors = _random_gaussians(1000).tensors()
    full = gaussians_to_splats(tensors)
    same, total = preview_splats(tensors, 5000)
    assert total == 1000 and len(same) == 1000
    small, total = preview_splats(tensors, 250)
    assert total == 1000 and len(small) == 250
    idx = [int(np.flatnonzero((full.centers == c).all(axis=1))[0]) for c in small.centers]
    assert len(set(idx)) == 250  # a sample of the scene's own splats, no duplicates
    # 1 in 4 kept -> each kept footprint covers 4x the area (covariance x 4); colours untouched.
    np.testing.assert_allclose(small.covariances, full.covariances[idx] * 4.0, rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(small.rgbs, full.rgbs[idx])
    with pytest.raises(ValueError, match="budget"):
        preview_splats(tensors, 0)


def test_chunks_cover_every_splat_once():
    slices = chunk_slices(10_001, 2_500)
    assert [s.stop - s.start for s in slices] == [2500, 2500, 2500, 2500, 1]
    assert chunk_slices(0, 10) == []


def _projection_viser_way(pose, width: int, height: int, points: np.ndarray) -> np.ndarray:
    """Project world points the way viser draws a camera: p_cam = Rᵀ (p - t), pinhole from vertical FOV."""
    R = quats_to_matrices(pose.wxyz[None])[0]
    cam = (points - pose.position) @ R
    f = height / (2.0 * math.tan(pose.fov / 2.0))
    return np.stack([f * cam[:, 0] / cam[:, 2] + width / 2, f * cam[:, 1] / cam[:, 2] + height / 2], axis=1)


CAMERAS = [
    *trajectory("stage", 96, 64),
    Camera(96, 64, trajectory("single", 96, 64)[0].K, look_at([1, -0.5, 0.2], [0, 0, 3])),
    Camera(96, 64, trajectory("single", 96, 64)[0].K, look_at([-0.3, 0.4, 1.0], [2.0, 0.0, 4.0])),
]


@pytest.mark.parametrize("cam", CAMERAS)
def test_viser_pose_sees_what_the_stitch_camera_sees(cam: Camera):
    pose = camera_to_viser(cam)
    rng = np.random.default_rng(0)
    ahead = rng.uniform(-1, 1, (50, 3)) + np.array([0.0, 0.0, 4.0])
    pts = cam.center + ahead @ cam.camera_to_world[:3, :3].T
    uv, z = project_points(cam, pts)
    assert (z > 0).all()
    np.testing.assert_allclose(_projection_viser_way(pose, 96, 64, pts), uv, atol=1e-6)
    # The camera looks along its +z: look_at lies ahead, up is the image's -y direction in the world.
    np.testing.assert_allclose(pose.look_at - pose.position, cam.camera_to_world[:3, 2], atol=1e-9)
    np.testing.assert_allclose(pose.up, -cam.camera_to_world[:3, 1], atol=1e-9)


def test_yaw_to_the_right_looks_towards_plus_x_in_viser():
    left, right = trajectory("stage", 96, 64)[1:3]  # the release's stage: photo, left, right
    assert (camera_to_viser(right).look_at - camera_to_viser(right).position)[0] > 0.3
    assert (camera_to_viser(left).look_at - camera_to_viser(left).position)[0] < -0.3


def test_client_camera_round_trip_to_stitch_camera():
    for cam in trajectory("360", 96, 64)[:6]:
        pose = camera_to_viser(cam)
        back = camera_from_viser(pose.wxyz, pose.position, pose.fov, cam.width, cam.height)
        np.testing.assert_allclose(back.world_to_camera, cam.world_to_camera, atol=1e-9)
        np.testing.assert_allclose(back.K, cam.K, atol=1e-9)
    with pytest.raises(ValueError, match="field of view"):
        camera_from_viser([1, 0, 0, 0], [0, 0, 0], 0.0, 64, 48)


def test_recorded_path_file_reads_back_as_the_same_cameras(tmp_path):
    """Keyframes built from viser client poses, saved in the path format, load with load_camera_path."""
    cams = trajectory("orbit", 128, 96)
    keyframes = []
    for cam in cams:
        pose = camera_to_viser(cam)
        keyframes.append(camera_from_viser(pose.wxyz, pose.position, pose.fov, 128, 96))
    save_camera_path(keyframes, tmp_path / "path.json")
    loaded = load_camera_path(tmp_path / "path.json", 256, 192)  # another resolution: focal rescales
    for a, b in zip(loaded, cams, strict=True):
        np.testing.assert_allclose(a.world_to_camera, b.world_to_camera, atol=1e-9)
        assert a.focal == pytest.approx(2.0 * b.focal)


def test_overview_pose_sits_behind_the_first_camera_and_looks_ahead():
    cam = trajectory("single", 96, 64)[0]
    pose = overview_pose(cam)
    assert pose.position[2] < 0 and pose.position[1] < 0  # behind (z) and above (y is down)
    assert pose.look_at[2] > 0
    R = quats_to_matrices(pose.wxyz[None])[0]
    forward = (pose.look_at - pose.position) / np.linalg.norm(pose.look_at - pose.position)
    np.testing.assert_allclose(R[:, 2], forward, atol=1e-9)
    np.testing.assert_allclose(-R[:, 1], pose.up, atol=1e-9)


def test_thumbnail_limits_width_and_keeps_colour():
    img = np.zeros((300, 600, 3), np.uint8)
    img[:, :300] = (200, 30, 10)
    small = thumbnail(img, 256)
    assert small.shape == (128, 256, 3) and small.dtype == np.uint8
    assert tuple(small[10, 10]) == (200, 30, 10)
    assert thumbnail(np.full((10, 20, 3), 0.5, np.float32), 256)[0, 0, 0] == 128
