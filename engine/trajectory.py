"""Built-in camera trajectories (`--mode`): single, stage, 360 and orbit, turning as the Invisible Stitch
release does (focal length = image width, principal point at the centre, yaw rotations about the photo)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from splat.cameras import Camera, intrinsics, look_at, pose_to_world_to_camera, rotation_ypr
from splat.errors import CameraPathError

MODES = ("single", "stage", "360", "orbit")


# The release's azimuths in degrees (PAPER-NOTES). In the release a positive azimuth turns the camera LEFT
# (its +25 view's optical axis lands at column ~24 of the 720-px photo), so `stage` is photo, left, right and
# `360` turns left. Here yaw follows the JSON path convention (positive turns right): yaw = -azimuth.
RELEASE_STAGE_AZIMUTHS = (0.0, 25.0, -25.0)
RELEASE_360_AZIMUTHS = (*[25.0 * i for i in range(11)], 272.5, 316.25)


def azimuth_to_yaw(azimuth_deg: float) -> float:
    """The release's azimuth (positive turns left) as a stitch yaw (positive turns right)."""
    return 0.0 - float(azimuth_deg)  # 0.0 - 0.0 is +0.0, never -0.0 in a manifest


STAGE_YAWS = tuple(azimuth_to_yaw(a) for a in RELEASE_STAGE_AZIMUTHS)  # (0, -25, +25): photo, left, right
FULL_360_YAWS = tuple(azimuth_to_yaw(a) for a in RELEASE_360_AZIMUTHS)  # 0, -25, ..., -316.25: turns left


def yaw_cameras(yaws: Sequence[float], width: int, height: int, focal: float | None = None) -> list[Camera]:
    K = intrinsics(width, height, focal)
    return [Camera(width, height, K, pose_to_world_to_camera(rotation_ypr(y), (0, 0, 0))) for y in yaws]


def orbit_cameras(
    width: int,
    height: int,
    n_views: int = 5,
    arc_deg: float = 40.0,
    center_depth: float = 3.0,
    focal: float | None = None,
) -> list[Camera]:
    """Cameras on a horizontal arc around a point `center_depth` in front of the first camera, looking at it.
    The first camera is the photo's (identity); the others alternate right/left out to +-arc/2."""
    if n_views < 1:
        raise CameraPathError(f"orbit needs at least one view, got {n_views}")
    target = np.array([0.0, 0.0, center_depth])
    angles = [0.0]
    step = arc_deg / 2.0 / max(1, (n_views - 1 + 1) // 2)
    for i in range(1, n_views):
        k = (i + 1) // 2
        angles.append(k * step if i % 2 == 1 else -k * step)
    K = intrinsics(width, height, focal)
    cams = []
    for a in angles:
        t = math.radians(a)
        # Positive angle moves the camera to the left so it looks to the right at the target.
        pos = target + center_depth * np.array([-math.sin(t), 0.0, -math.cos(t)])
        cams.append(Camera(width, height, K, look_at(pos, target)))
    return cams


def trajectory(mode: str, width: int, height: int, focal: float | None = None, **orbit_kw) -> list[Camera]:
    """Built-in camera sets as the release turns: single = [0]; stage = photo, 25 deg left, 25 deg right;
    360 = 13 views turning left (release azimuths 0, 25, ..., 250, 272.5, 316.25); orbit = an arc."""
    if mode == "single":
        return yaw_cameras([0.0], width, height, focal)
    if mode == "stage":
        return yaw_cameras(STAGE_YAWS, width, height, focal)
    if mode == "360":
        return yaw_cameras(FULL_360_YAWS, width, height, focal)
    if mode == "orbit":
        return orbit_cameras(width, height, focal=focal, **orbit_kw)
    raise CameraPathError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)} or pass --path FILE.json")
