"""Pinhole cameras (OpenCV axes: x right, y down, z forward), depth (un)projection and trajectories.

A `Camera` holds intrinsics K [3, 3] and a world-to-camera matrix [4, 4], both numpy float64. The
first camera of every built-in trajectory is the identity pose, so world coordinates are the photo's
camera coordinates. Trajectories follow the Invisible Stitch release: focal length = image width,
principal point at the image centre, new views are yaw rotations about the first camera.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splat.errors import CameraPathError

MODES = ("single", "stage", "360", "orbit")
MAX_CAMERA_SIDE = 16384  # pixels; a larger image would need gigabytes per render
MAX_PATH_BYTES = 8 << 20  # a camera path file larger than this is not a hand-written path
MAX_PATH_CAMERAS = 10_000

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
        K = _finite_array(d.get("K"), (3, 3), "camera K")
        w2c = _finite_array(d.get("world_to_camera"), (4, 4), "camera world_to_camera")
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


# --- trajectories ---------------------------------------------------------------------------------


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


# --- JSON camera paths ----------------------------------------------------------------------------

PATH_FORMAT_DOC = """\
A camera path is a JSON object:
  {"version": 1, "width": 512, "height": 384, "focal": 512,        # all optional
   "cameras": [ {"yaw": 0}, {"yaw": 20, "pitch": -5, "position": [0.1, 0, 0]},
                {"look_at": [0, 0, 3], "position": [0.5, 0, 0]},
                {"world_to_camera": [[...4 rows of 4...]]}, {"camera_to_world": [[...]]} ]}
Angles are degrees (yaw: positive turns right; pitch: positive looks up), positions in metres, OpenCV axes
(x right, y down, z forward); the photo's camera is the identity. Each camera may set its own "focal".
"""


def _finite_array(value, shape: tuple[int, ...], what: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise CameraPathError(f"{what} must be numbers with shape {shape}") from exc
    if arr.shape != shape:
        raise CameraPathError(f"{what} must have shape {shape}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise CameraPathError(f"{what} contains NaN or Inf; give finite numbers")
    return arr


def _number(entry: dict, key: str, default: float, where: str) -> float:
    value = entry.get(key, default)
    try:  # an integer with hundreds of digits overflows float(): not finite either
        finite = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    except OverflowError:
        finite = False
    if not finite:
        shown = "an integer too large for a float" if isinstance(value, int) else f"{value!r:.40}"
        raise CameraPathError(f"{where}: {key!r} must be a finite number, got {shown}")
    return float(value)


def camera_from_entry(entry: dict, width: int, height: int, focal: float | None, where: str) -> Camera:
    if not isinstance(entry, dict):
        raise CameraPathError(f"{where} must be an object with yaw/pitch/position, look_at or a 4x4 matrix")
    f = _number(entry, "focal", focal if focal is not None else float(width), where)
    if f <= 0:
        raise CameraPathError(f"{where}: focal must be positive")
    K = intrinsics(width, height, f)
    if "world_to_camera" in entry:
        w2c = _finite_array(entry["world_to_camera"], (4, 4), f"{where}.world_to_camera")
    elif "camera_to_world" in entry:
        c2w = _finite_array(entry["camera_to_world"], (4, 4), f"{where}.camera_to_world")
        if abs(np.linalg.det(c2w[:3, :3])) < 1e-6:
            raise CameraPathError(f"{where}.camera_to_world is not invertible; give a proper rotation")
        w2c = np.linalg.inv(c2w)
    else:
        position = _finite_array(entry.get("position", [0, 0, 0]), (3,), f"{where}.position")
        if "look_at" in entry:
            w2c = look_at(position, _finite_array(entry["look_at"], (3,), f"{where}.look_at"))
        elif any(k in entry for k in ("yaw", "pitch", "roll")):
            R = rotation_ypr(*(_number(entry, k, 0.0, where) for k in ("yaw", "pitch", "roll")))
            w2c = pose_to_world_to_camera(R, position)
        else:
            raise CameraPathError(
                f"{where} needs one of yaw/pitch/roll, look_at, world_to_camera or camera_to_world"
            )
    if abs(np.linalg.det(w2c[:3, :3])) < 1e-6:
        raise CameraPathError(f"{where} has a non-invertible rotation; give a proper rotation matrix")
    return Camera(width, height, K, w2c)


def load_camera_path(path: str | Path, width: int, height: int) -> list[Camera]:
    """Read a JSON camera path (format in PATH_FORMAT_DOC) for images of size width x height.

    If the file names its own width/height, its focal lengths are rescaled to the requested size.
    """
    path = Path(path)
    if not path.exists():
        raise CameraPathError(f"camera path {path} does not exist; check the --path argument")
    if not path.is_file():  # a directory, or a FIFO that would block the read forever
        raise CameraPathError(f"camera path {path} is not a regular file; give a JSON file")
    try:
        size = path.stat().st_size
        if size > MAX_PATH_BYTES:
            raise CameraPathError(
                f"camera path {path} is {size} bytes, more than {MAX_PATH_BYTES >> 20} MiB; not a camera path"
            )
        data = json.loads(path.read_text(encoding="utf-8"))
    except CameraPathError:
        raise
    except OSError as exc:
        raise CameraPathError(f"cannot read camera path {path} ({exc.strerror or exc})") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CameraPathError(f"camera path {path} is not valid JSON ({exc}); fix the file") from exc
    except (ValueError, RecursionError) as exc:  # integers beyond Python's digit limit, 100k-deep nesting
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(";")[0]
        raise CameraPathError(f"camera path {path} cannot be read ({why}); fix the file") from exc
    return cameras_from_json(data, width, height, str(path))


def cameras_from_json(data: object, width: int, height: int, where: str = "camera path") -> list[Camera]:
    if not isinstance(data, dict) or not isinstance(data.get("cameras"), list) or not data["cameras"]:
        raise CameraPathError(f"{where} must be an object with a non-empty 'cameras' list")
    if len(data["cameras"]) > MAX_PATH_CAMERAS:
        raise CameraPathError(f"{where} has {len(data['cameras'])} cameras, more than {MAX_PATH_CAMERAS}")
    file_w = _number(data, "width", float(width), where)
    if not 0 < file_w <= MAX_CAMERA_SIDE:
        raise CameraPathError(f"{where}: 'width' must be a positive number up to {MAX_CAMERA_SIDE}")
    if "height" in data:
        file_h = _number(data, "height", float(height), where)
        if not 0 < file_h <= MAX_CAMERA_SIDE:
            raise CameraPathError(f"{where}: 'height' must be a positive number up to {MAX_CAMERA_SIDE}")
    focal = data.get("focal")
    if focal is not None:
        focal = _number(data, "focal", 0.0, where) * width / float(file_w)
    cams = []
    for i, entry in enumerate(data["cameras"]):
        if isinstance(entry, dict) and "focal" in entry:
            entry = {**entry, "focal": _number(entry, "focal", 0.0, f"{where} camera {i}") * width / file_w}
        cams.append(camera_from_entry(entry, width, height, focal, f"{where} camera {i}"))
    return cams


def cameras_to_json(cameras: Sequence[Camera]) -> dict:
    """A path file (explicit matrices) that load_camera_path reads back exactly."""
    if not cameras:
        raise CameraPathError("no cameras to save")
    w, h = cameras[0].width, cameras[0].height
    return {
        "version": 1,
        "width": w,
        "height": h,
        "cameras": [
            {"world_to_camera": c.world_to_camera.tolist(), "focal": c.focal * w / c.width} for c in cameras
        ],
    }


def save_camera_path(cameras: Sequence[Camera], path: str | Path) -> None:
    """Write atomically (temp file + rename): a full disk never leaves half a path under the name."""
    import os

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(cameras_to_json(cameras), indent=2), encoding="utf-8")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
