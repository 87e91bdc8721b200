"""RGB-D sequences with poses: loaders for common folder layouts, auto-detected.

Every loader returns an `RGBDSequence`: a list of `FrameRef`s (paths, pose, intrinsics) that load lazily
into `RGBDFrame`s (image [H, W, 3] float32 in [0, 1] at the depth resolution, depth [H, W] float32 metres
with 0 = invalid, and a `splat.cameras.Camera`).

Supported layouts (`load_rgbd_sequence` picks by looking at the folder):
- 7-Scenes: `frame-XXXXXX.color.png|jpg`, `frame-XXXXXX.depth.png` (uint16 mm, 0 and 65535 invalid),
  `frame-XXXXXX.pose.txt` (4x4 camera-to-world), optional `camera-intrinsics.txt` (3x3; default fx=fy=585,
  centred). Colour comes from a second, uncalibrated camera (focal ~525 px against depth's 585): it is
  registered to depth by a fixed similarity (zoom 1.10 about the centre, then 10 px right), which we
  measured on redkitchen by maximising the correlation of colour edges with inverse-depth edges over
  7 frames (correlation 0.106 against 0.012 unregistered). Pass `register_color=False` to skip it.
- ICL-NUIM / Redwood (Open3D style): `trajectory.log` (per frame a line `i i n` then a 4x4 camera-to-world),
  `color/NNNNN.jpg|png`, `depth/NNNNN.png` (uint16 mm); optional `camera-intrinsics.txt` or Open3D
  `intrinsic.json`; default intrinsics fx=fy=525, cx=319.5, cy=239.5 (PrimeSense defaults).
- ScanNet exported frames: `color/N.jpg`, `depth/N.png` (uint16 mm), `pose/N.txt` (camera-to-world; frames
  with non-finite poses are skipped), `intrinsic/intrinsic_depth.txt` (4x4).
- Generic: a `frames.json` file:
      {"intrinsics": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],   # for the depth images, OpenCV convention
       "depth_scale": 1000.0,                                 # stored value / depth_scale = metres (.png)
       "frames": [{"color": "rgb/0.png", "depth": "depth/0.png", "camera_to_world": [[...4x4...]]}, ...]}
  Depth files may be 16-bit PNGs (divided by depth_scale) or .npy float metres. A frame may give its own
  "intrinsics". Paths are relative to the folder.

Intrinsics in files follow OpenCV's convention (pixel centre at integer coordinates); the project's cameras
put pixel centres at +0.5 (splat.cameras.pixel_grid), so cx and cy are shifted by 0.5 on loading.
Colour images are resized to the depth image size. Poses: OpenCV axes (x right, y down, z forward).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from splat.cameras import Camera
from splat.errors import StitchError

LAYOUTS = ("7scenes", "trajectory_log", "scannet", "generic")
MAX_DEPTH_PIXELS = 16_000_000  # parsers bound allocations: refuse absurd image sizes

_SEVEN_SCENES_K = np.array([[585.0, 0.0, 320.0], [0.0, 585.0, 240.0], [0.0, 0.0, 1.0]])
# 7-Scenes colour -> depth registration at 640x480 (module doc): dst = 1.10 (src - centre) + centre + (10, 0).
_SEVEN_SCENES_COLOR_ZOOM, _SEVEN_SCENES_COLOR_SHIFT = 1.10, (10.0, 0.0)
_PRIMESENSE_K = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class FrameRef:
    """One frame on disk; `load()` reads it."""

    name: str
    color_path: Path
    depth_path: Path
    camera_to_world: np.ndarray  # [4, 4]
    K: np.ndarray  # [3, 3] OpenCV convention, for the depth image
    depth_scale: float  # stored value / depth_scale = metres (PNG); ignored for .npy
    # Colour -> depth registration (zoom about the centre, shift x, shift y in pixels at 640x480), or None.
    color_registration: tuple[float, float, float] | None = None

    def load(self) -> RGBDFrame:
        depth = read_depth(self.depth_path, self.depth_scale)
        h, w = depth.shape
        image = read_color(self.color_path, (w, h))
        if self.color_registration is not None:
            zoom, sx, sy = self.color_registration
            affine = similarity_affine(zoom, (sx * w / 640.0, sy * h / 480.0), w, h)
            image = cv2.warpAffine(image, affine, (w, h), borderMode=cv2.BORDER_REPLICATE)
        K = np.asarray(self.K, dtype=np.float64).copy()
        K[0, 2] += 0.5  # OpenCV -> pixel-centre-at-0.5 convention
        K[1, 2] += 0.5
        camera = Camera(w, h, K, np.linalg.inv(self.camera_to_world))
        return RGBDFrame(self.name, image, depth, camera)


@dataclass
class RGBDFrame:
    name: str
    image: np.ndarray  # [H, W, 3] float32 in [0, 1], resized to the depth size
    depth: np.ndarray  # [H, W] float32 metres, 0 = invalid
    camera: Camera

    @property
    def valid(self) -> np.ndarray:  # [H, W] bool
        return self.depth > 0


@dataclass
class RGBDSequence:
    name: str
    layout: str
    root: Path
    frames: list[FrameRef]

    def __len__(self) -> int:
        return len(self.frames)

    def load(self, index: int) -> RGBDFrame:
        return self.frames[index].load()


# --- low-level readers ----------------------------------------------------------------------------


def read_depth(path: Path, depth_scale: float) -> np.ndarray:  # -> [H, W] float32 metres, 0 = invalid
    """A 16-bit PNG (value / depth_scale metres; 0 and 65535 invalid) or a .npy float array in metres."""
    path = Path(path)
    if not path.is_file():
        raise StitchError(f"depth file {path} is missing; check the dataset folder")
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False, mmap_mode="r")
        except ValueError as exc:
            raise StitchError(f"depth file {path} is not a plain .npy array ({exc})") from exc
        if arr.ndim != 2 or arr.size > MAX_DEPTH_PIXELS or arr.dtype.kind not in "fiu":
            raise StitchError(f"depth file {path} must be a 2D numeric array, got {arr.dtype} {arr.shape}")
        d = np.array(arr, dtype=np.float32)
        d[~np.isfinite(d) | (d < 0)] = 0.0
        return d
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim != 2:
        raise StitchError(f"depth file {path} is not a single-channel image; expected a 16-bit PNG")
    if raw.size > MAX_DEPTH_PIXELS:
        raise StitchError(f"depth file {path} is too large ({raw.shape})")
    if raw.dtype != np.uint16:
        raise StitchError(f"depth file {path} is {raw.dtype}, expected a 16-bit PNG")
    d = raw.astype(np.float32) / np.float32(depth_scale)
    d[raw == 65535] = 0.0
    return d


def read_color(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """RGB image -> [H, W, 3] float32 in [0, 1], resized (area / bilinear) to size = (width, height)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise StitchError(f"colour image {path} is missing or unreadable; check the dataset folder")
    if size is not None and (bgr.shape[1], bgr.shape[0]) != tuple(size):
        shrink = bgr.shape[1] > size[0]
        bgr = cv2.resize(bgr, tuple(size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def read_matrix(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Whitespace-separated numbers -> array of `shape` (the leading block if the file holds more)."""
    try:
        values = np.array(Path(path).read_text(encoding="utf-8").split(), dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise StitchError(f"cannot read a {shape[0]}x{shape[1]} matrix from {path} ({exc})") from exc
    n = shape[0] * shape[1]
    if values.size < n:
        raise StitchError(f"{path} holds {values.size} numbers, expected a {shape[0]}x{shape[1]} matrix")
    return values[:n].reshape(shape)


def read_trajectory_log(path: Path) -> list[np.ndarray]:
    """Redwood/ICL-NUIM `trajectory.log`: blocks of one metadata line + 4 matrix rows -> list of [4, 4]."""
    lines = [ln.split() for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    if len(lines) % 5 != 0:
        raise StitchError(
            f"{path}: expected blocks of 5 lines (meta line + 4x4 matrix), got {len(lines)} lines"
        )
    poses = []
    for b in range(0, len(lines), 5):
        try:
            m = np.array([[float(x) for x in row] for row in lines[b + 1 : b + 5]])
        except ValueError as exc:
            raise StitchError(f"{path}: non-numeric pose in block {b // 5} ({exc})") from exc
        if m.shape != (4, 4):
            raise StitchError(f"{path}: pose block {b // 5} is not 4x4")
        poses.append(m)
    return poses


def _read_intrinsics_file(root: Path, default: np.ndarray) -> np.ndarray:
    txt = root / "camera-intrinsics.txt"
    if txt.is_file():
        return read_matrix(txt, (3, 3))
    js = root / "intrinsic.json"  # Open3D PinholeCameraIntrinsic: column-major 3x3
    if js.is_file():
        data = json.loads(js.read_text(encoding="utf-8"))
        m = np.asarray(data.get("intrinsic_matrix", []), dtype=np.float64)
        if m.size != 9:
            raise StitchError(f"{js}: 'intrinsic_matrix' must hold 9 numbers")
        return m.reshape(3, 3).T
    return default.copy()


def _numeric_key(p: Path) -> tuple[int, str]:
    digits = re.findall(r"\d+", p.stem)
    return (int(digits[-1]) if digits else -1, p.name)


def _find_by_stem(folder: Path, stem: str, exts: Sequence[str]) -> Path | None:
    for ext in exts:
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


# --- layouts --------------------------------------------------------------------------------------


def similarity_affine(zoom: float, shift: tuple[float, float], width: int, height: int) -> np.ndarray:
    """[2, 3] warpAffine matrix: zoom about the image centre, then shift (pixels)."""
    cx, cy = width / 2.0, height / 2.0
    return np.array(
        [[zoom, 0.0, cx * (1 - zoom) + shift[0]], [0.0, zoom, cy * (1 - zoom) + shift[1]]], dtype=np.float64
    )


def load_7scenes(root: Path, register_color: bool = True) -> RGBDSequence:
    root = Path(root)
    K = _read_intrinsics_file(root, _SEVEN_SCENES_K)
    reg = (_SEVEN_SCENES_COLOR_ZOOM, *_SEVEN_SCENES_COLOR_SHIFT) if register_color else None
    frames = []
    for depth_path in sorted(root.glob("frame-*.depth.png"), key=_numeric_key):
        stem = depth_path.name[: -len(".depth.png")]
        color = _find_by_stem(root, stem, (".color.png", ".color.jpg"))
        pose = root / f"{stem}.pose.txt"
        if color is None or not pose.is_file():
            continue
        c2w = read_matrix(pose, (4, 4))
        if np.isfinite(c2w).all():
            frames.append(FrameRef(stem, color, depth_path, c2w, K, 1000.0, reg))
    return RGBDSequence(root.name, "7scenes", root, frames)


def load_trajectory_log(root: Path, log_path: Path | None = None) -> RGBDSequence:
    """log_path: the trajectory file when it is not root/trajectory.log (e.g. one level down)."""
    root = Path(root)
    poses = read_trajectory_log(log_path or root / "trajectory.log")
    K = _read_intrinsics_file(root, _PRIMESENSE_K)
    color_dir = next((root / d for d in ("color", "rgb", "image") if (root / d).is_dir()), None)
    depth_dir = root / "depth"
    if color_dir is None or not depth_dir.is_dir():
        raise StitchError(
            f"{root}: a trajectory.log folder needs color/ (or rgb/, image/) and depth/ subfolders"
        )
    depths = sorted(depth_dir.glob("*.png"), key=_numeric_key)
    colors = sorted([*color_dir.glob("*.jpg"), *color_dir.glob("*.png")], key=_numeric_key)
    if len(depths) != len(colors):
        raise StitchError(f"{root}: {len(colors)} colour images but {len(depths)} depth images")
    if len(poses) < len(depths):
        raise StitchError(f"{root}: trajectory.log has {len(poses)} poses for {len(depths)} frames")
    frames = [
        FrameRef(d.stem, c, d, pose, K, 1000.0)
        for d, c, pose in zip(depths, colors, poses, strict=False)
        if np.isfinite(pose).all()
    ]
    return RGBDSequence(root.name, "trajectory_log", root, frames)


def load_scannet(root: Path) -> RGBDSequence:
    root = Path(root)
    K = read_matrix(root / "intrinsic" / "intrinsic_depth.txt", (4, 4))[:3, :3]
    frames = []
    for depth_path in sorted((root / "depth").glob("*.png"), key=_numeric_key):
        color = _find_by_stem(root / "color", depth_path.stem, (".jpg", ".png"))
        pose = root / "pose" / f"{depth_path.stem}.txt"
        if color is None or not pose.is_file():
            continue
        c2w = read_matrix(pose, (4, 4))
        if np.isfinite(c2w).all():  # ScanNet marks lost tracking with -inf poses
            frames.append(FrameRef(depth_path.stem, color, depth_path, c2w, K, 1000.0))
    return RGBDSequence(root.name, "scannet", root, frames)


def load_generic(root: Path) -> RGBDSequence:
    root = Path(root)
    spec_path = root / "frames.json"
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StitchError(f"{spec_path} is not readable JSON ({exc})") from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("frames"), list):
        raise StitchError(f"{spec_path} must be an object with a 'frames' list (see engine/bench/rgbd.py)")

    def matrix(value, shape, where):
        try:
            m = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise StitchError(f"{spec_path}: {where} must be numbers of shape {shape}") from exc
        if m.shape != shape or not np.isfinite(m).all():
            raise StitchError(f"{spec_path}: {where} must be finite numbers of shape {shape}")
        return m

    scale = float(spec.get("depth_scale", 1000.0))
    if not scale > 0:
        raise StitchError(f"{spec_path}: depth_scale must be positive")
    frames = []
    for i, f in enumerate(spec["frames"]):
        if not isinstance(f, dict) or not {"color", "depth", "camera_to_world"} <= f.keys():
            raise StitchError(f"{spec_path}: frame {i} needs 'color', 'depth' and 'camera_to_world'")
        K = matrix(f.get("intrinsics", spec.get("intrinsics")), (3, 3), f"frame {i} intrinsics")
        c2w = matrix(f["camera_to_world"], (4, 4), f"frame {i} camera_to_world")
        frames.append(FrameRef(Path(f["depth"]).stem, root / f["color"], root / f["depth"], c2w, K, scale))
    return RGBDSequence(root.name, "generic", root, frames)


def detect_layout(root: Path) -> str:
    root = Path(root)
    if (root / "frames.json").is_file():
        return "generic"
    if (root / "trajectory.log").is_file():
        return "trajectory_log"
    if (root / "intrinsic" / "intrinsic_depth.txt").is_file() and (root / "pose").is_dir():
        return "scannet"
    if any(root.glob("frame-*.depth.png")):
        return "7scenes"
    raise StitchError(
        f"{root} is not a known RGB-D layout (7-Scenes frame-*.depth.png, trajectory.log + color/ depth/, "
        "ScanNet color/ depth/ pose/ intrinsic/, or frames.json); see engine/bench/rgbd.py"
    )


def load_rgbd_sequence(
    root: str | Path, layout: str | None = None, register_color: bool = True
) -> RGBDSequence:
    """Auto-detect the folder layout (or use `layout`, one of LAYOUTS) and list its frames."""
    root = Path(root)
    if not root.is_dir():
        raise StitchError(f"RGB-D folder {root} does not exist; pass a dataset folder")
    layout = layout or detect_layout(root)
    loaders = {
        "7scenes": load_7scenes,
        "trajectory_log": load_trajectory_log,
        "scannet": load_scannet,
        "generic": load_generic,
    }
    if layout not in loaders:
        raise StitchError(f"unknown RGB-D layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    seq = load_7scenes(root, register_color) if layout == "7scenes" else loaders[layout](root)
    if len(seq) < 2:
        raise StitchError(
            f"{root}: found {len(seq)} usable frames ({layout} layout); the benchmark needs >= 2"
        )
    return seq
