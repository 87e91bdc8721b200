"""The camera-path JSON format (`--path FILE.json`, viewer-saved paths): parse within bounds, write back."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from splat.cameras import (
    MAX_CAMERA_SIDE,
    Camera,
    finite_array,
    intrinsics,
    look_at,
    pose_to_world_to_camera,
    rotation_ypr,
)
from splat.errors import CameraPathError

MAX_PATH_BYTES = 8 << 20  # a camera path file larger than this is not a hand-written path
MAX_PATH_CAMERAS = 10_000


PATH_FORMAT_DOC = """\
A camera path is a JSON object:
  {"version": 1, "width": 512, "height": 384, "focal": 512,        # all optional
   "cameras": [ {"yaw": 0}, {"yaw": 20, "pitch": -5, "position": [0.1, 0, 0]},
                {"look_at": [0, 0, 3], "position": [0.5, 0, 0]},
                {"world_to_camera": [[...4 rows of 4...]]}, {"camera_to_world": [[...]]} ]}
Angles are degrees (yaw: positive turns right; pitch: positive looks up), positions in metres, OpenCV axes
(x right, y down, z forward); the photo's camera is the identity. Each camera may set its own "focal".
"""


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
        w2c = finite_array(entry["world_to_camera"], (4, 4), f"{where}.world_to_camera")
    elif "camera_to_world" in entry:
        c2w = finite_array(entry["camera_to_world"], (4, 4), f"{where}.camera_to_world")
        if abs(np.linalg.det(c2w[:3, :3])) < 1e-6:
            raise CameraPathError(f"{where}.camera_to_world is not invertible; give a proper rotation")
        w2c = np.linalg.inv(c2w)
    else:
        position = finite_array(entry.get("position", [0, 0, 0]), (3,), f"{where}.position")
        if "look_at" in entry:
            w2c = look_at(position, finite_array(entry["look_at"], (3,), f"{where}.look_at"))
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
