"""A saved scene to show: a scene file (.ply/.splat/.spz) or a run folder (its scene, cameras and views)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import Tensor

from splat.cameras import Camera
from splat.errors import StitchError


@dataclass
class SavedScene:
    gaussians: dict[str, Tensor]
    cameras: list[Camera] = field(default_factory=list)
    images: dict[int, np.ndarray] = field(default_factory=dict)  # view index -> [H, W, 3] uint8
    source: str = ""  # what was loaded, for the panel
    directory: Path = Path(".")  # where recorded camera paths go

    @property
    def summary(self) -> str:
        views = f", {len(self.cameras)} generation cameras" if self.cameras else ""
        return f"{self.source}: {len(self.gaussians['means']):,} Gaussians{views}"


def load_saved(path: str | Path, spz_axes: str = "rdf") -> SavedScene:
    """Read a scene file (.ply/.splat/.spz, a .spz in frame `spz_axes`) or a run directory."""
    p = Path(path)
    if p.is_dir():
        return _load_run_dir(p)
    if not p.exists():
        raise StitchError(f"{p} does not exist; give a scene file (.ply, .splat, .spz) or a run directory")
    return SavedScene(_load_scene_file(p, spz_axes), source=p.name, directory=p.resolve().parent)


def _load_scene_file(path: Path, spz_axes: str = "rdf") -> dict[str, Tensor]:
    from splat.formats.io import load_scene

    try:
        return load_scene(path, axes=spz_axes).tensors()
    except StitchError:
        raise
    except ValueError as exc:  # splat.formats.io's SceneFileError names the file and the problem
        raise StitchError(str(exc)) from exc


def _load_run_dir(root: Path) -> SavedScene:
    from engine.rundir import RunDirectory

    rd = RunDirectory(root)
    manifest = rd.read_manifest()
    cameras = rd.read_cameras(manifest)  # validated in one place (engine/rundir.py)
    scene_file = _scene_file(root, manifest)
    if scene_file is not None:
        gaussians, source = _load_scene_file(scene_file), f"{root.name}/{scene_file.name}"
    else:
        views_done, tensors, _ = rd.load_checkpoint()
        if tensors is None:
            raise StitchError(f"{root} has no scene yet (no scene.ply or checkpoint); wait for view 1")
        gaussians, source = tensors, f"{root.name} (checkpoint after {views_done} views)"
    images = {}
    for i in range(len(cameras)):
        view = rd.view_path("view", i)
        if view.is_file():
            images[i] = _read_rgb(view)
    return SavedScene(gaussians, cameras, images, source, root.resolve())


def _scene_file(root: Path, manifest: dict) -> Path | None:
    candidates = [root / "scene.ply"]
    exported = manifest.get("exports", {}).get("ply") if isinstance(manifest.get("exports"), dict) else None
    if isinstance(exported, str):
        candidates += [Path(exported), root / Path(exported).name]
    return next((c for c in candidates if c.is_file()), None)


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except OSError as exc:
        raise StitchError(f"cannot read view image {path} ({exc}); the run directory is damaged") from exc
