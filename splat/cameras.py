"""Pinhole cameras (OpenCV axes: x right, y down, z forward), depth (un)projection and poses.

A `Camera` holds intrinsics K [3, 3] and a world-to-camera matrix [4, 4], both numpy float64. World
coordinates are the photo's camera coordinates (the first camera is the identity pose). Built-in trajectories
live in engine/trajectory.py, the camera-path JSON format in splat/formats/camera_path.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from splat.errors import CameraPathError

MAX_CAMERA_SIDE = 16384  # pixels; a larger image would need gigabytes per render


@dataclass(frozen=True)
class Camera:
    width: int
    height: int
    K: np.ndarray  # [3, 3] intrinsics in pixels
    world_to_camera: np.ndarray  # [4, 4]

    def __post_init__(self) -> None:
        K = np.asarray(self.K, dtype=np.float64)
        w2c = np.asarray(self.world_to_camera, dtype=np.float64)
        if K.shape != (3, 3) or w2c.shape != (4, 4):
            raise CameraPathError(
                f"camera needs K [3, 3] and world_to_camera [4, 4], got {K.shape}, {w2c.shape}"
            )
        if not (np.isfinite(K).all() and np.isfinite(w2c).all()):
            raise CameraPathError("camera matrices contain NaN or Inf; give finite numbers")
        if self.width < 1 or self.height < 1:
            raise CameraPathError(f"camera size must be positive, got {self.width}x{self.height}")
        if self.width > MAX_CAMERA_SIDE or self.height > MAX_CAMERA_SIDE:
            raise CameraPathError(
                f"camera size {self.width}x{self.height} is above {MAX_CAMERA_SIDE} px per side; "
                "use a smaller one"
            )
        if abs(np.linalg.det(w2c[:3, :3])) < 1e-6:
            raise CameraPathError("camera rotation is not invertible; give a proper rotation matrix")
        # Only the 3x3 block used to be checked: a last row other than [0, 0, 0, 1] made inv() fail (or
        # skew every projection) deep inside the pipeline.
        if not np.allclose(w2c[3], (0.0, 0.0, 0.0, 1.0), atol=1e-6):
            raise CameraPathError(
                f"a 4x4 pose must end with the row [0, 0, 0, 1], got {np.round(w2c[3], 6).tolist()}"
            )
        if abs(K[2, 2] - 1.0) > 1e-6 or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise CameraPathError("camera intrinsics K need positive focal lengths and K[2][2] = 1")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "world_to_camera", w2c)

    @property
    def camera_to_world(self) -> np.ndarray:  # [4, 4]
        return np.linalg.inv(self.world_to_camera)

    @property
    def center(self) -> np.ndarray:  # [3] camera centre in world coordinates
        return self.camera_to_world[:3, 3]

    @property
    def focal(self) -> float:
        return float(self.K[0, 0])

    def scaled(self, width: int, height: int) -> Camera:
        """The same camera at another resolution (intrinsics scaled with the image)."""
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[0] *= sx
        K[1] *= sy
        return Camera(width, height, K, self.world_to_camera)

    def to_dict(self) -> dict:
        return {
            "width": self.width,
            "height": self.height,
            "K": self.K.tolist(),
            "world_to_camera": self.world_to_camera.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Camera:
        """The inverse of to_dict; anything else (a damaged manifest) is a CameraPathError."""
        if not isinstance(d, dict):
            raise CameraPathError(
                f"a camera must be an object with width, height, K, world_to_camera, got {d!r:.40}"
            )
        size = []
        for key in ("width", "height"):
            value = d.get(key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise CameraPathError(f"camera {key!r} must be an integer, got {type(value).__name__}")
            size.append(value)
        K = finite_array(d.get("K"), (3, 3), "camera K")
        w2c = finite_array(d.get("world_to_camera"), (4, 4), "camera world_to_camera")
        return cls(size[0], size[1], K, w2c)


def intrinsics(width: int, height: int, focal: float | None = None) -> np.ndarray:
    """K [3, 3] with focal = image width by default (about 53 degrees horizontal FOV), centred."""
    f = float(width if focal is None else focal)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def pixel_grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates u, v, each [H, W] (pixel (0, 0) covers [0, 1) x [0, 1), centre 0.5)."""
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    return u, v


def unproject_depth(camera: Camera, depth: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Lift a z-depth map [H, W] to world points [M, 3] (row-major order over `mask` [H, W] if given)."""
    if depth.shape != (camera.height, camera.width):
        raise ValueError(f"depth {depth.shape} does not match camera {(camera.height, camera.width)}")
    u, v = pixel_grid(camera.width, camera.height)
    if mask is None:
        mask = np.ones_like(depth, dtype=bool)
    z = depth[mask].astype(np.float64)
    uv1 = np.stack([u[mask], v[mask], np.ones_like(z)], axis=-1)  # [M, 3]
    rays = uv1 @ np.linalg.inv(camera.K).T
    cam_points = rays * z[:, None]
    c2w = camera.camera_to_world
    return cam_points @ c2w[:3, :3].T + c2w[:3, 3]


def project_points(camera: Camera, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points [M, 3] -> pixel coordinates [M, 2] (continuous, centre convention) and z-depth [M]."""
    w2c = camera.world_to_camera
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uvw = cam @ camera.K.T
        uv = uvw[:, :2] / uvw[:, 2:3]
    return uv, z


def warp_depth(
    src: Camera, src_depth: np.ndarray, dst: Camera, src_mask: np.ndarray | None = None
) -> np.ndarray:
    """Forward-warp a depth map into another camera with a point z-buffer -> [H_dst, W_dst], 0 = nothing.

    A simple per-point splat for geometry checks; scene rendering uses the Gaussian renderer instead.
    """
    valid = src_depth > 0 if src_mask is None else (src_mask & (src_depth > 0))
    pts = unproject_depth(src, src_depth, valid)
    uv, z = project_points(dst, pts)
    ui = np.floor(uv[:, 0]).astype(np.int64)
    vi = np.floor(uv[:, 1]).astype(np.int64)
    ok = (z > 1e-6) & (ui >= 0) & (ui < dst.width) & (vi >= 0) & (vi < dst.height)
    out = np.full(dst.height * dst.width, np.inf)
    np.minimum.at(out, vi[ok] * dst.width + ui[ok], z[ok])
    out[~np.isfinite(out)] = 0.0
    return out.reshape(dst.height, dst.width)


# --- poses ----------------------------------------------------------------------------------------


def rotation_ypr(yaw_deg: float, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """Camera-to-world rotation [3, 3]: yaw about y (positive turns right), pitch about x (positive up),
    roll about z, applied as R = R_yaw @ R_pitch @ R_roll in OpenCV axes."""
    y, p, r = (math.radians(a) for a in (yaw_deg, pitch_deg, roll_deg))
    R_yaw = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    # y points down, so a positive pitch (looking up) rotates forward towards -y.
    R_pitch = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    R_roll = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return R_yaw @ R_pitch @ R_roll


def pose_to_world_to_camera(rotation_c2w: np.ndarray, position: Sequence[float]) -> np.ndarray:
    """Camera-to-world rotation [3, 3] and centre [3] -> world-to-camera [4, 4]."""
    w2c = np.eye(4)
    w2c[:3, :3] = rotation_c2w.T
    w2c[:3, 3] = -rotation_c2w.T @ np.asarray(position, dtype=np.float64)
    return w2c


def look_at(
    position: Sequence[float], target: Sequence[float], up: Sequence[float] = (0, -1, 0)
) -> np.ndarray:
    """World-to-camera [4, 4] of a camera at `position` looking at `target` (up is -y in OpenCV axes)."""
    pos = np.asarray(position, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - pos
    if np.linalg.norm(forward) < 1e-9:
        raise CameraPathError("look_at target equals the camera position; move one of them")
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, -np.asarray(up, dtype=np.float64))
    if np.linalg.norm(right) < 1e-9:
        raise CameraPathError("look_at direction is parallel to 'up'; pick another target or up vector")
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward], axis=1)  # columns: camera axes in world
    return pose_to_world_to_camera(R, pos)


def finite_array(value, shape: tuple[int, ...], what: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise CameraPathError(f"{what} must be numbers with shape {shape}") from exc
    if arr.shape != shape:
        raise CameraPathError(f"{what} must have shape {shape}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise CameraPathError(f"{what} contains NaN or Inf; give finite numbers")
    return arr
