"""A finished run as extend reads it (manifest, config, photo, cameras) and the cameras a user asks for."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.config import GenerateConfig
from engine.images import file_sha256, load_photo
from engine.rundir import RunDirectory
from splat.cameras import Camera
from splat.errors import StitchError
from splat.formats.camera_path import camera_from_entry, load_camera_path

UNDO_DIR = "undo"
LOCK_NAME = ".extend.lock"
CAMERA_PATH = "camera_path.json"


@dataclass
class RunState:
    """A finished (or being-extended) run as extend needs it."""

    rd: RunDirectory
    manifest: dict
    config: GenerateConfig
    image: np.ndarray  # [H, W, 3] float32, the photo as the run was built from it
    cameras: list[Camera]

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]

    @property
    def extensions(self) -> list[dict]:
        return list(self.manifest.get("extensions", []))


def read_run(root: str | Path) -> RunState:
    """The run's manifest, config, photo and cameras; a run that is still generating is refused."""
    rd = RunDirectory(Path(root))
    if not rd.root.is_dir():
        raise StitchError(f"{rd.root} is not a directory; give the run directory of stitch generate")
    manifest = rd.read_manifest()
    status = manifest.get("status")
    if status not in ("finished", "extending"):
        raise StitchError(
            f"{rd.root} is not finished yet (status {status!r}); wait for it, or continue it with "
            f"stitch generate --resume {rd.root}"
        )
    config = rd.read_config(manifest)  # type- and range-checked, as --resume reads it
    cameras = rd.read_cameras(manifest)  # also tells the checkpoint loader how many views there can be
    if file_sha256(rd.root / "input.png") != manifest.get("input_png_sha256"):
        raise StitchError(f"{rd.root / 'input.png'} changed since the run started; start a new run")
    image = load_photo(rd.root / "input.png", max(config.max_side, 8))
    return RunState(rd, manifest, config, image, cameras)


def cameras_from_options(
    state: RunState,
    path: Path | None = None,
    yaw: float | None = None,
    pitch: float | None = None,
    move: Sequence[float] | None = None,
) -> list[Camera]:
    """--path FILE.json, or one camera from --yaw/--pitch/--move (degrees and metres in the photo's frame,
    the camera path format's {"yaw", "pitch", "position"}), at the run's image size and focal length."""
    w, h = state.size
    shortcut = yaw is not None or pitch is not None or move is not None
    if path is not None and shortcut:
        raise StitchError("give either --path FILE.json or --yaw/--pitch/--move, not both")
    if path is not None:
        return load_camera_path(path, w, h)
    if not shortcut:
        return []
    entry: dict = {"yaw": yaw or 0.0, "pitch": pitch or 0.0}
    if move is not None:
        entry["position"] = list(move)
    return [camera_from_entry(entry, w, h, state.cameras[0].focal, "--yaw/--pitch/--move camera")]


def scene_path(state: RunState) -> Path:
    """Where the run's scene is (the same file `stitch view` shows)."""
    root = state.rd.root
    exported = state.manifest.get("exports", {}).get("ply")
    candidates = [root / "scene.ply"]
    if isinstance(exported, str):
        candidates += [Path(exported), root / Path(exported).name]
    return next((c for c in candidates if c.is_file()), root / "scene.ply")
