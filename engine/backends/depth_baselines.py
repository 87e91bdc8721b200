"""Baseline depth completers for the scene-geometry benchmark (and as simple pipeline fallbacks).

- `InterpolationCompleter`: LucidDreamer-style interpolation: piecewise-linear interpolation of the known
  depth over a Delaunay triangulation of the hole borders (rasterised with numba), nearest known depth
  outside their convex hull.
- `ZeroKnownMonocular(completer)`: runs any completer with an all-False mask: the "zero sparse input"
  (monocular) mode of the paper's baselines.
- `ScaleShiftAligned(mono)`: a monocular depth function aligned to the known depth by one robust global scale
  & shift (depth_align.py): the paper's "ZoeDepth + global scale & shift" baseline with any mono model.
All return float32 metres > 0 and give back the known pixels exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
from scipy import ndimage
from scipy.spatial import Delaunay

from engine.backends.depth import DepthCompleter
from engine.backends.depth_align import align_scale_shift, estimate_alignment
from engine.fusion import nearest_fill
from splat.errors import StitchError

MIN_DEPTH = 1e-3


def _inputs(image, known_depth, known_mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = np.asarray(image, dtype=np.float32)
    known_depth = np.asarray(known_depth, dtype=np.float32)
    mask = np.asarray(known_mask, dtype=bool)
    if known_depth.ndim != 2 or mask.shape != known_depth.shape or image.shape[:2] != known_depth.shape:
        raise StitchError(
            f"image {image.shape}, known_depth {known_depth.shape} and mask {mask.shape} must share [H, W]"
        )
    return image, known_depth, mask & np.isfinite(known_depth) & (known_depth > 0)


@numba.njit(cache=True)
def _rasterize_triangles(simplices, xs, ys, zs, target, out, written):  # pragma: no cover - compiled
    """Barycentric interpolation of zs over each triangle, written to pixels where target is True."""
    H, W = target.shape
    for t in range(simplices.shape[0]):
        a, b, c = simplices[t, 0], simplices[t, 1], simplices[t, 2]
        xa, ya, xb, yb, xc, yc = xs[a], ys[a], xs[b], ys[b], xs[c], ys[c]
        det = (yb - yc) * (xa - xc) + (xc - xb) * (ya - yc)
        if abs(det) < 1e-12:
            continue
        x0, x1 = max(int(min(xa, xb, xc)), 0), min(int(max(xa, xb, xc)), W - 1)
        y0, y1 = max(int(min(ya, yb, yc)), 0), min(int(max(ya, yb, yc)), H - 1)
        for y in range(y0, y1 + 1):
            for x in range(x0, x1 + 1):
                if not target[y, x] or written[y, x]:
                    continue
                l1 = ((yb - yc) * (x - xc) + (xc - xb) * (y - yc)) / det
                l2 = ((yc - ya) * (x - xc) + (xa - xc) * (y - yc)) / det
                l3 = 1.0 - l1 - l2
                if l1 >= -1e-9 and l2 >= -1e-9 and l3 >= -1e-9:
                    out[y, x] = l1 * zs[a] + l2 * zs[b] + l3 * zs[c]
                    written[y, x] = True


@dataclass
class InterpolationCompleter:
    """Linear interpolation of the known depth across holes (Delaunay over the hole borders)."""

    border_px: int = 2  # known pixels within this distance of a hole are interpolation nodes
    interior_stride: int = 16  # plus a sparse grid of the other known pixels (keeps the triangulation small)
    fallback: DepthCompleter | None = None  # used when nothing is known (default: the scene prior)
    name: str = "interpolation"

    def describe(self) -> dict:
        return {"backend": self.name, "border_px": self.border_px, "interior_stride": self.interior_stride}

    def __call__(self, image: np.ndarray, known_depth: np.ndarray, known_mask: np.ndarray) -> np.ndarray:
        image, known_depth, mask = _inputs(image, known_depth, known_mask)
        if not mask.any():
            return _prior(self.fallback)(image, known_depth, mask)
        if mask.all():
            return known_depth.copy()
        dist = ndimage.distance_transform_edt(mask)  # distance of known pixels to the nearest hole
        nodes = mask & (dist <= self.border_px)
        grid = np.zeros_like(mask)
        grid[:: self.interior_stride, :: self.interior_stride] = True
        nodes |= mask & grid
        ys, xs = np.nonzero(nodes)
        out = nearest_fill(known_depth, mask).astype(np.float64)  # outside the hull: nearest known depth
        if len(ys) >= 3 and np.ptp(ys) > 0 and np.ptp(xs) > 0:
            # Pixel centres at integer coordinates here; only relative positions matter.
            try:
                tri = Delaunay(np.stack([xs, ys], 1).astype(np.float64))
            except Exception:  # degenerate (collinear) node sets: keep the nearest fill
                tri = None
            if tri is not None:
                written = np.zeros_like(mask)
                _rasterize_triangles(
                    tri.simplices.astype(np.int64), xs.astype(np.float64), ys.astype(np.float64),
                    known_depth[ys, xs].astype(np.float64), ~mask, out, written,
                )  # fmt: skip
        out = np.maximum(out, MIN_DEPTH)
        return np.where(mask, known_depth, out).astype(np.float32)


@dataclass
class ZeroKnownMonocular:
    """Run `completer` with nothing known: monocular depth, ignoring the known depth entirely."""

    completer: DepthCompleter
    name: str = "zero-known"

    def describe(self) -> dict:
        return {"backend": self.name, "inner": self.completer.describe()}

    def __call__(self, image: np.ndarray, known_depth: np.ndarray, known_mask: np.ndarray) -> np.ndarray:
        image, known_depth, mask = _inputs(image, known_depth, known_mask)
        empty = np.zeros_like(mask)
        return np.asarray(self.completer(image, np.zeros_like(known_depth), empty), dtype=np.float32)


MonoFn = Callable[[np.ndarray], np.ndarray]  # image [H, W, 3] -> depth (or inverse depth) [H, W]


@dataclass
class ScaleShiftAligned:
    """A monocular prediction aligned to the known depth by one robust global scale & shift.

    mono: a DepthCompleter (called with an empty mask) or a function image -> prediction [H, W];
    space: "depth" or "inverse" (where the affine fit happens); pred_is_inverse: the prediction is a
    disparity-like map (relative models such as MiDaS / Depth Anything). With nothing known the prediction
    is returned as is (must then be metric depth)."""

    mono: DepthCompleter | MonoFn
    space: str = "inverse"
    pred_is_inverse: bool = False
    robust: bool = True
    name: str = "mono+scale-shift"

    def describe(self) -> dict:
        inner = self.mono.describe() if hasattr(self.mono, "describe") else {"fn": repr(self.mono)}
        return {"backend": self.name, "space": self.space, "robust": self.robust, "inner": inner}

    def predict(self, image: np.ndarray) -> np.ndarray:
        if hasattr(self.mono, "describe"):  # a DepthCompleter in monocular mode
            H, W = image.shape[:2]
            return np.asarray(self.mono(image, np.zeros((H, W), np.float32), np.zeros((H, W), bool)))
        return np.asarray(self.mono(image))

    def __call__(self, image: np.ndarray, known_depth: np.ndarray, known_mask: np.ndarray) -> np.ndarray:
        image, known_depth, mask = _inputs(image, known_depth, known_mask)
        pred = self.predict(image)
        if pred.shape != known_depth.shape:
            raise StitchError(
                f"monocular prediction {pred.shape} does not match the image {known_depth.shape}"
            )
        return align_scale_shift(
            pred, known_depth, mask, self.space, self.robust, self.pred_is_inverse, keep_known=True
        )

    def alignment(self, image: np.ndarray, known_depth: np.ndarray, known_mask: np.ndarray):
        """The fitted Alignment (scale, shift, inliers) for inspection."""
        image, known_depth, mask = _inputs(image, known_depth, known_mask)
        return estimate_alignment(
            self.predict(image), known_depth, mask, self.space, self.robust, self.pred_is_inverse
        )


def _prior(fallback: DepthCompleter | None) -> DepthCompleter:
    if fallback is not None:
        return fallback
    from engine.backends.depth_classical import ClassicalDepthCompleter

    return ClassicalDepthCompleter()
