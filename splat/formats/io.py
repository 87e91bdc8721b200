"""Front door for Gaussian scene files: .ply (lossless), .splat and .spz (compact exports for viewers).

    save_scene(gaussians, "scene.ply")      # format chosen by suffix: .ply, .splat, .spz
    g = load_scene("scene.spz")
    scene_info("scene.ply")                 # {"format", "count", "sh_degree", "bounds", "file_size", ...}

All writes are atomic (temp file in the same directory, fsync, os.replace). Every problem with a file
(missing, truncated, lying header, wrong property types, NaN/Inf values, unknown suffix) raises
`SceneFileError` (a StitchError, so a ValueError) whose one-line message starts with the path.
NaN/Inf values are always rejected, on load and on save: such Gaussians render as garbage and poison
training, so we refuse them loudly instead of passing them on.

Axes: every format holds the scene's own frame (stitch uses OpenCV axes, x right, y down, z forward,
like 3DGS training output). That is how PlayCanvas splat-transform (SuperSplat's converter) reads and
writes all three, checked by converting our files with it; `save_scene(g, "x.spz", axes="rub")` writes
the y-up/z-back frame the spz README describes instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from splat.formats.ply import load_ply, read_ply_arrays, save_ply, write_ply_arrays
from splat.formats.scene_arrays import Device, PathLike, SceneArrays, SceneFileError, check_readable, fail
from splat.formats.splat_format import load_splat, read_splat_arrays, save_splat, write_splat_arrays
from splat.formats.spz import load_spz, read_spz, read_spz_arrays, save_spz, write_spz_arrays
from splat.gaussians import Gaussians

__all__ = [
    "FORMATS",
    "SceneFileError",
    "load_ply",
    "load_scene",
    "load_splat",
    "load_spz",
    "save_ply",
    "save_scene",
    "save_splat",
    "save_spz",
    "scene_format",
    "scene_info",
]

FORMATS = {".ply": "ply", ".splat": "splat", ".spz": "spz"}
_READERS = {"ply": read_ply_arrays, "splat": read_splat_arrays, "spz": read_spz_arrays}
_WRITERS = {"ply": write_ply_arrays, "splat": write_splat_arrays, "spz": write_spz_arrays}


def scene_format(path: PathLike) -> str:
    """'ply' | 'splat' | 'spz' from the file suffix (case-insensitive)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise fail(path, f"unknown scene format {suffix or '(no suffix)'!r}; use .ply, .splat or .spz")
    return FORMATS[suffix]


def save_scene(gaussians: Gaussians, path: PathLike, **options) -> None:
    """Write Gaussians in the format named by the suffix (.ply lossless; .splat/.spz lossy exports).

    `options` go to the format's writer: for .spz, `version` (2 or 3) and `axes` ("rdf" = "ply", or "rub");
    other formats ignore those two.
    """
    fmt = scene_format(path)
    _WRITERS[fmt](SceneArrays.from_gaussians(gaussians), path, **_spz_axes_option(fmt, options))


def load_scene(path: PathLike, device: Device = "cpu", **options) -> Gaussians:
    """Read a .ply, .splat or .spz file into Gaussians on `device` (.spz option: `axes`)."""
    fmt = scene_format(path)
    return _READERS[fmt](path, **_spz_axes_option(fmt, options)).to_gaussians(device)


# `--spz-axes` names: rdf (x right, y down, z forward: stitch's OpenCV frame, as the .ply) or rub (y up,
# z back: the spz README's frame); splat.formats.spz calls rdf "ply".
SPZ_AXES = {"rdf": "ply", "ply": "ply", "rub": "rub"}
SPZ_AXES_WORDS = {
    "ply": "rdf (x right, y down, z forward: the .ply's frame)",
    "rub": "rub (x right, y up, z back: the spz README's frame)",
}


def _spz_axes_option(fmt: str, options: dict) -> dict:
    """Map rdf -> ply for spz.py; the .spz-only options (axes, version) mean nothing to other formats,
    so a command line's --spz-axes / --spz-version pass through a .ply or .splat untouched."""
    if fmt != "spz":
        return {k: v for k, v in options.items() if k not in ("axes", "version")}
    if "axes" in options:
        axes = options["axes"]
        if axes not in SPZ_AXES:
            raise SceneFileError(f"--spz-axes must be rdf or rub, got {axes!r}")
        options = {**options, "axes": SPZ_AXES[axes]}
    return options


def scene_info(path: PathLike, spz_axes: str = "rdf") -> dict:
    """Summary for `stitch info`: format, count, SH degree, position bounds, file size (JSON-friendly).

    spz_axes: the frame a .spz is read in (the file does not say; bounds are given in that frame)."""
    fmt = scene_format(path)
    size = check_readable(path)
    header: dict = {}
    axes = _spz_axes_option("spz", {"axes": spz_axes})["axes"]
    if fmt == "spz":
        header, scene = read_spz(path, axes=axes)
    else:
        scene = _READERS[fmt](path)
    info: dict = {
        "path": os.fspath(path),
        "format": fmt,
        "file_size": size,
        "count": len(scene),
        "sh_degree": scene.sh_degree,
        "bounds": None,
    }
    if len(scene):
        info["bounds"] = {
            "min": [float(v) for v in scene.means.min(axis=0)],
            "max": [float(v) for v in scene.means.max(axis=0)],
        }
        alpha = 1.0 / (1.0 + np.exp(-scene.opacities.astype(np.float64)))
        info["mean_opacity"] = float(alpha.mean())
    if fmt == "spz":
        info["spz_version"] = header["version"]
        info["spz_axes"] = f"read as {SPZ_AXES_WORDS[axes]}; the file does not record its frame"
    return info
