"""Fusing a new view into the scene: coverage / inpainting masks and depth-edge ("noodle") removal.

Both follow the Invisible Stitch release (PAPER-NOTES):
- the render's coverage (alpha > 0.5) is eroded with a disk of radius 2 so that half-covered border pixels are
  redone, and the inpainting mask is the uncovered region dilated by a disk of radius 2;
- depth pixels on steep depth edges would become long "noodle" Gaussians stretched between foreground and
  background: normalise depth to [0, 1], take the local max - min in a disk of radius 1, mark pixels with a
  value >= 12/255 invalid and refill them from the valid mask eroded by 3, as the release does: layer by
  layer of city-block distance, each pixel takes the max of its 8 neighbours (the far side of the edge).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def disk(radius: int) -> np.ndarray:  # -> [2r+1, 2r+1] bool
    """Disk structuring element (|dx|^2 + |dy|^2 <= r^2), as skimage.morphology.disk."""
    r = int(radius)
    if r < 0:
        raise ValueError(f"disk radius must be >= 0, got {radius}")
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return (x * x + y * y) <= r * r


def coverage_masks(
    alpha: np.ndarray,  # [H, W] accumulated opacity of the render in [0, 1]
    erode_px: int = 2,
    dilate_px: int = 2,
    threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:  # covered [H, W] bool, inpaint [H, W] bool
    """covered: alpha > threshold eroded by disk(erode_px); inpaint: the rest dilated by disk(dilate_px).

    The image border is not a hole: erosion treats outside pixels as covered. With equal radii the two masks
    are exact complements (dilating the holes = eroding the coverage)."""
    alpha = np.asarray(alpha)
    if alpha.ndim != 2:
        raise ValueError(f"alpha must be [H, W], got shape {alpha.shape}")
    raw = alpha > threshold
    covered = raw
    if erode_px > 0:
        covered = ndimage.binary_erosion(raw, structure=disk(erode_px), border_value=1)
    holes = ~raw
    if dilate_px > 0:
        holes = ndimage.binary_dilation(holes, structure=disk(dilate_px), border_value=0)
    return covered, holes


def nearest_fill(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each invalid pixel takes the value of its nearest valid pixel (Euclidean); [H, W] -> [H, W]."""
    if valid.all() or not valid.any():
        return values.copy()
    _, (iy, ix) = ndimage.distance_transform_edt(~valid, return_indices=True)
    return values[iy, ix]


def layered_max_fill(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The release's refill ([H, W] -> [H, W]): invalid pixels are visited in layers of equal city-block
    distance to the valid region, nearest layer first; each takes the max of its 8 neighbours that hold a
    value (valid or filled by an earlier layer). Depth edges therefore fall to the far side."""
    out = np.asarray(values, dtype=np.float64).copy()
    valid = np.asarray(valid, dtype=bool)
    if valid.all() or not valid.any():
        return out.astype(np.asarray(values).dtype)
    h, w = out.shape
    out[~valid] = np.nan
    dist = ndimage.distance_transform_cdt(~valid, metric="taxicab")
    offsets = np.array([(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0), (0, 1), (1, -1), (1, 0), (1, 1)])
    order = np.argsort(dist, axis=None, kind="stable")
    counts = np.bincount(dist.ravel())
    start = int(counts[0])
    for n in counts[1:]:
        flat = order[start : start + n]
        start += int(n)
        if n == 0:
            continue
        ii, jj = np.divmod(flat, w)
        ni = np.clip(ii[None] + offsets[:, :1], 0, h - 1)  # [9, n]; outside the image: the border (as the
        nj = np.clip(jj[None] + offsets[:, 1:], 0, w - 1)  # release clips its indices)
        out[ii, jj] = np.nanmax(out[ni, nj], axis=0)  # one layer reads only earlier layers: all at once
    return out.astype(np.asarray(values).dtype)


def depth_edges(depth: np.ndarray, radius: int = 1) -> np.ndarray:  # -> [H, W] float in [0, 1]
    """Local max - min of depth normalised to [0, 1] (min-max over positive pixels), in a disk."""
    d = np.asarray(depth, dtype=np.float64)
    pos = d > 0
    if not pos.any():
        return np.zeros_like(d)
    lo, hi = d[pos].min(), d[pos].max()
    norm = np.where(pos, (d - lo) / max(hi - lo, 1e-12), 0.0)
    fp = disk(radius)
    return ndimage.maximum_filter(norm, footprint=fp, mode="nearest") - ndimage.minimum_filter(
        norm, footprint=fp, mode="nearest"
    )


def remove_depth_noodles(
    depth: np.ndarray,  # [H, W] metres, > 0
    threshold: float = 12.0 / 255.0,
    radius: int = 1,
    valid_erode: int = 3,
    fill: str = "release",
) -> tuple[np.ndarray, np.ndarray]:  # depth_clean [H, W] float32, invalid [H, W] bool (refilled pixels)
    """Refill pixels on steep depth edges from valid neighbours (see module doc).

    invalid = the pixels whose value was replaced: edge pixels (gradient >= threshold) grown by the erosion of
    the valid mask. If nothing valid would remain, the depth is returned unchanged.
    fill: "release" (layered max of the 8 neighbours, as the release) or "nearest" (Euclidean nearest)."""
    if fill not in ("release", "nearest"):
        raise ValueError(f"fill must be 'release' or 'nearest', got {fill!r}")
    d = np.asarray(depth, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"depth must be [H, W], got shape {d.shape}")
    edges = depth_edges(d, radius) >= threshold
    valid = ~edges
    if valid_erode > 0:
        valid = ndimage.binary_erosion(valid, structure=disk(valid_erode), border_value=1)
    if not valid.any():
        return d.copy(), np.zeros_like(valid)
    filled = layered_max_fill(d, valid) if fill == "release" else nearest_fill(d, valid)
    return filled.astype(np.float32), ~valid
