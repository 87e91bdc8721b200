""".splat files (antimatter15's web viewer format): 32 bytes per Gaussian, no header, degree-0 colour only.

Row layout (little-endian):

    position  3 x float32
    scale     3 x float32    linear standard deviations (exp of our log scales)
    rgba      4 x uint8      colour = 0.5 + SH_C0 * sh0, alpha = sigmoid(opacity), both * 255, clamped
    rotation  4 x uint8      unit quaternion (w, x, y, z) * 128 + 128, clamped to 0..255

Rows are sorted by descending exp(sum of log scales) * sigmoid(opacity), the order antimatter15's
converter writes and that progressive web viewers rely on to show the big splats first. Positions stay in
the scene's own frame (no axis flip), the same as our .ply. The format drops higher SH bands and
quantises colour, alpha and rotation to 8 bits, so it is an export format, not a checkpoint.
"""

from __future__ import annotations

from typing import IO

import numpy as np

from splat.formats.scene_arrays import (
    Device,
    PathLike,
    SceneArrays,
    as_bytes,
    atomic_write,
    check_point_count,
    check_readable,
    fail,
    logit,
    normalised_quats,
    sigmoid,
)
from splat.gaussians import SH_C0, Gaussians

ROW_BYTES = 32
SPLAT_DTYPE = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
assert SPLAT_DTYPE.itemsize == ROW_BYTES


def splat_order(scene: SceneArrays) -> np.ndarray:
    """Indices [N] by descending size * opacity (stable, so ties keep their order)."""
    size = np.exp(scene.scales.astype(np.float64).sum(axis=1))
    return np.argsort(-(size * sigmoid(scene.opacities)), kind="stable")


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def encode_splat(scene: SceneArrays) -> np.ndarray:
    """SceneArrays -> structured rows [N] in viewer order."""
    order = splat_order(scene)
    rows = np.empty(len(scene), dtype=SPLAT_DTYPE)
    rows["position"] = scene.means[order]
    rows["scale"] = np.exp(scene.scales[order].astype(np.float64))
    rgb = scene.sh0[order].astype(np.float64) * SH_C0 + 0.5
    rows["rgba"][:, :3] = _to_u8(rgb * 255.0)
    rows["rgba"][:, 3] = _to_u8(sigmoid(scene.opacities[order]) * 255.0)
    rows["rot"] = _to_u8(normalised_quats(scene.quats[order]) * 128.0 + 128.0)
    return rows


def write_splat_arrays(scene: SceneArrays, path: PathLike) -> None:
    scene.check_finite(path, "save it")
    rows = encode_splat(scene)
    if not np.isfinite(rows["scale"]).all():
        raise fail(path, "a log scale is too large for float32 once exponentiated; refusing to save it")

    def write(f: IO[bytes]) -> None:
        f.write(as_bytes(rows))

    atomic_write(path, write)


def save_splat(gaussians: Gaussians, path: PathLike) -> None:
    """Export Gaussians as a .splat file (32 bytes each, sorted for web viewers; lossy, degree 0)."""
    write_splat_arrays(SceneArrays.from_gaussians(gaussians), path)


def read_splat_arrays(path: PathLike) -> SceneArrays:
    size = check_readable(path)
    if size % ROW_BYTES:
        raise fail(path, f"size {size} is not a multiple of {ROW_BYTES} bytes, so it is not a .splat file")
    check_point_count(path, size // ROW_BYTES)
    try:
        with open(path, "rb") as f:
            data = f.read(size)
    except OSError as e:
        raise fail(path, f"cannot read file ({e.strerror or e})") from e
    if len(data) != size:
        raise fail(path, f"file changed while reading (expected {size} bytes, read {len(data)})")
    rows = np.frombuffer(data, dtype=SPLAT_DTYPE)
    scale = rows["scale"].astype(np.float64)
    if not np.isfinite(rows["position"]).all() or not np.isfinite(scale).all():
        raise fail(path, "NaN/Inf in positions or scales; refusing to load it")
    if (scale < 0).any():
        raise fail(path, f"{int((scale < 0).any(axis=1).sum())} rows have negative scales; not a .splat file")
    rgba = rows["rgba"].astype(np.float64) / 255.0
    quats = normalised_quats((rows["rot"].astype(np.float64) - 128.0) / 128.0)
    return SceneArrays(
        means=rows["position"].astype(np.float32),
        # A zero scale (flat splat) would be log(0) = -inf; clamp to a tiny positive size.
        scales=np.log(np.maximum(scale, 1e-30)).astype(np.float32),
        quats=quats.astype(np.float32),
        opacities=logit(rgba[:, 3], eps=0.5 / 255.0).astype(np.float32),
        sh0=((rgba[:, :3] - 0.5) / SH_C0).astype(np.float32),
        shN=np.zeros((len(rows), 0, 3), np.float32),
    )


def load_splat(path: PathLike, device: Device = "cpu") -> Gaussians:
    """Read a .splat file (degree-0 Gaussians, in the file's sorted order)."""
    return read_splat_arrays(path).to_gaussians(device)
