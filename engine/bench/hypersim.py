"""Hypersim scenes (Roberts et al. 2021, apple/ml-hypersim) as RGB-D sequences for the geometry benchmark.

Layout of one scene as downloaded (only the files read here):
    ai_001_001/
      _detail/metadata_scene.csv                      parameter_name,parameter_value  (meters_per_asset_unit)
      _detail/cam_00/camera_keyframe_positions.hdf5    "dataset": [N, 3] camera centres, asset units
      _detail/cam_00/camera_keyframe_orientations.hdf5 "dataset": [N, 3, 3] camera-to-world rotations
                                                       (OpenGL camera axes: x right, y up, looking down -z)
      _detail/cam_00/camera_keyframe_frame_indices.hdf5 "dataset": [N] frame id of each keyframe (optional)
      images/scene_cam_00_final_preview/frame.0000.color.jpg     tone-mapped colour
      images/scene_cam_00_final_hdf5/frame.0000.color.hdf5       HDR colour (used when no preview jpg)
      images/scene_cam_00_geometry_hdf5/frame.0000.depth_meters.hdf5  "dataset": [H, W] metres
Every camera trajectory (cam_00, cam_01, ...) is one sequence named `<scene>/cam_XX`.

Depth: Hypersim's `depth_meters` is the distance from the camera centre along each pixel's ray (not z):
z = distance * f / sqrt((u - cx)^2 + (v - cy)^2 + f^2), with pixel centres at +0.5 (the project's
convention). NaN (no geometry: windows to the sky) is invalid. Intrinsics: Hypersim's standard camera, 60
degree horizontal field of view, centred principal point (a scene with a different camera in
`metadata_camera_parameters.csv` is not handled: its tilt-shift projection is not a pinhole).
Poses: positions scaled by meters_per_asset_unit; orientations converted to OpenCV axes (y down, z forward).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.bench.rgbd import MAX_DEPTH_PIXELS, FrameRef, RGBDFrame, RGBDSequence, read_color
from splat.cameras import Camera
from splat.errors import StitchError

FOV_X = np.pi / 3.0  # Hypersim's standard camera
_OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0])


def _h5py():
    try:
        import h5py
    except ImportError:
        raise StitchError("reading Hypersim needs h5py: pip install h5py") from None
    return h5py


def read_hdf5(path: Path) -> np.ndarray:
    """The "dataset" array of a Hypersim HDF5 file."""
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            if "dataset" not in f:
                raise StitchError(f"{path}: no 'dataset' array (not a Hypersim HDF5 file)")
            ds = f["dataset"]
            if ds.size > 3 * MAX_DEPTH_PIXELS:
                raise StitchError(f"{path}: array {ds.shape} is too large")
            return np.asarray(ds[()])
    except OSError as exc:
        raise StitchError(f"{path} is not a readable HDF5 file ({exc})") from exc


def hypersim_intrinsics(width: int, height: int) -> np.ndarray:
    """3x3 K in the OpenCV convention (pixel centres at integers) for Hypersim's standard camera."""
    f = (width / 2.0) / np.tan(FOV_X / 2.0)
    return np.array([[f, 0.0, width / 2.0 - 0.5], [0.0, f, height / 2.0 - 0.5], [0.0, 0.0, 1.0]])


def distance_to_z(distance: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Distance along the ray -> z-depth; K in the OpenCV convention. NaN/inf/negative -> 0 (invalid)."""
    h, w = distance.shape
    u = np.arange(w, dtype=np.float64)[None, :] - K[0, 2]
    v = np.arange(h, dtype=np.float64)[:, None] - K[1, 2]
    fx, fy = K[0, 0], K[1, 1]
    cos = 1.0 / np.sqrt((u / fx) ** 2 + (v / fy) ** 2 + 1.0)  # ray's cosine to the optical axis
    d = np.asarray(distance, dtype=np.float64)
    z = np.where(np.isfinite(d) & (d > 0), d * cos, 0.0)
    return z.astype(np.float32)


@dataclass(frozen=True)
class HypersimFrameRef(FrameRef):
    """A Hypersim frame: HDF5 distance depth, preview JPEG (or HDR HDF5) colour."""

    def load(self) -> RGBDFrame:
        distance = read_hdf5(self.depth_path)
        if distance.ndim != 2:
            raise StitchError(f"{self.depth_path}: depth must be [H, W], got {distance.shape}")
        h, w = distance.shape
        depth = distance_to_z(distance, self.K)
        if self.color_path.suffix.lower() == ".hdf5":
            hdr = read_hdf5(self.color_path).astype(np.float32)
            if hdr.shape[:2] != (h, w):
                raise StitchError(f"{self.color_path}: colour {hdr.shape} does not match depth {(h, w)}")
            image = np.clip(np.nan_to_num(hdr), 0, None) ** (1 / 2.2)  # display gamma, clipped
            image = np.clip(image, 0.0, 1.0).astype(np.float32)
        else:
            image = read_color(self.color_path, (w, h))
        K = np.asarray(self.K, dtype=np.float64).copy()
        K[:2, 2] += 0.5  # OpenCV -> pixel-centre-at-0.5
        return RGBDFrame(self.name, image, depth, Camera(w, h, K, np.linalg.inv(self.camera_to_world)))


def is_hypersim_scene(root: Path) -> bool:
    return (root / "_detail").is_dir() and (root / "images").is_dir()


def hypersim_cameras(root: Path) -> list[str]:
    """Camera trajectories with geometry images: ["cam_00", ...]."""
    cams = []
    for d in sorted((root / "images").glob("scene_cam_*_geometry_hdf5")):
        cam = d.name[len("scene_") : -len("_geometry_hdf5")]
        if (root / "_detail" / cam).is_dir():
            cams.append(cam)
    return cams


def _meters_per_asset_unit(root: Path) -> float:
    path = root / "_detail" / "metadata_scene.csv"
    if not path.is_file():
        raise StitchError(f"{path} is missing: Hypersim poses need meters_per_asset_unit")
    with path.open(encoding="utf-8", newline="") as fh:
        for rec in csv.DictReader(fh):
            if rec.get("parameter_name") == "meters_per_asset_unit":
                try:
                    value = float(rec["parameter_value"])
                except (TypeError, ValueError):
                    break
                if value > 0:
                    return value
    raise StitchError(f"{path}: no positive meters_per_asset_unit row")


def load_hypersim(root: str | Path, cam: str = "cam_00", name: str | None = None) -> RGBDSequence:
    """One camera trajectory of a Hypersim scene -> RGBDSequence (layout "hypersim")."""
    root = Path(root)
    detail = root / "_detail" / cam
    positions = read_hdf5(detail / "camera_keyframe_positions.hdf5").astype(np.float64)
    rotations = read_hdf5(detail / "camera_keyframe_orientations.hdf5").astype(np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3 or rotations.shape != (len(positions), 3, 3):
        raise StitchError(f"{detail}: keyframe positions {positions.shape} / orientations {rotations.shape}")
    ids_path = detail / "camera_keyframe_frame_indices.hdf5"
    frame_ids = (
        read_hdf5(ids_path).astype(int).tolist() if ids_path.is_file() else list(range(len(positions)))
    )
    keyframe_of = {fid: k for k, fid in enumerate(frame_ids)}
    scale = _meters_per_asset_unit(root)
    geometry = root / "images" / f"scene_{cam}_geometry_hdf5"
    preview = root / "images" / f"scene_{cam}_final_preview"
    final = root / "images" / f"scene_{cam}_final_hdf5"
    frames: list[FrameRef] = []
    K = None
    for depth_path in sorted(geometry.glob("frame.*.depth_meters.hdf5")):
        m = re.match(r"frame\.(\d+)\.depth_meters\.hdf5$", depth_path.name)
        if m is None or int(m.group(1)) not in keyframe_of:
            continue
        stem = f"frame.{m.group(1)}"
        color = preview / f"{stem}.color.jpg"
        if not color.is_file():
            color = final / f"{stem}.color.hdf5"
        if not color.is_file():
            continue
        k = keyframe_of[int(m.group(1))]
        if not (np.isfinite(positions[k]).all() and np.isfinite(rotations[k]).all()):
            continue
        if K is None:  # every frame of a scene has the same size; read it once
            h5py = _h5py()
            with h5py.File(depth_path, "r") as f:
                h, w = f["dataset"].shape[:2]
            K = hypersim_intrinsics(w, h)
        c2w = np.eye(4)
        c2w[:3, :3] = rotations[k] @ _OPENGL_TO_OPENCV
        c2w[:3, 3] = positions[k] * scale
        frames.append(HypersimFrameRef(stem, color, depth_path, c2w, K, 1.0))
    return RGBDSequence(name or f"{root.name}/{cam}", "hypersim", root, frames)
