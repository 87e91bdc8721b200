"""Classical depth completion (the offline default) and the first-view scene prior.

`ClassicalDepthCompleter` fills the unknown pixels of a view from the depth the scene already gives it, with
no learned model. Everything happens in inverse depth, where a plane is an affine function of the pixel
coordinates (1/z = a u + b v + c), so "continue the plane" is linear extrapolation there.

Methods (`method=`):
- "geodesic" (default): every unknown pixel copies the known pixel nearest along image paths that avoid
               colour edges (a raster-scan geodesic distance transform, numba), then a "cone" smoothing whose
               width grows with the distance from the known region removes propagation streaks;
- "nearest":   each unknown pixel copies its nearest known pixel (optionally cone-smoothed);
- "harmonic":  membrane (Laplace) fill: the smoothest surface that meets the known depth, Neumann at the image
               border; solved coarse-to-fine (direct solve on a coarse level, conjugate gradients above);
- "edge":      the same with image-edge-aware weights (colour differences weaken the smoothness coupling);
- "plane":     plane-aware: a coarse "spline in tension" (biharmonic + a little membrane) continues the local
               slope of inverse depth across the hole and flattens it out over `plane_length` pixels, then a
               full-resolution harmonic correction makes it meet the known depth exactly at the seam.
Known pixels are returned exactly; the output is float32 and > 0 everywhere.

How the default was picked (MAE in metres on uncovered pixels with ground truth; engine/bench/geometry.py
pairs, plus a "side" protocol on the same real frames: the outer 35 % of the width or 33 % of the height
unknown, as after a yaw; 7-Scenes colour registered to depth):

    set (pairs)              geodesic  nearest  harmonic  edge   plane  interpolation
    ICL gap 2 (1)            0.057     0.087    0.103     0.071  0.106  0.108
    ICL gap 4 (1)            0.058     0.107    0.116     0.087  0.120  0.117
    redkitchen gap 5 (10)    0.055     0.053    0.081     0.077  0.078  0.079
    redkitchen gap 12 (5)    0.082     0.093    0.121     0.115  0.115  0.112
    ICL side (6)             0.224     0.332    0.367     0.323  0.577  0.332
    redkitchen side (27)     0.258     0.286    0.238     0.208  0.315  0.286

The membrane and plane fills lose at the seams: Neumann borders and averaging pull the far field towards
the mean of the whole boundary, and extrapolated slopes overshoot on real, noisy borders. Colour-geodesic
propagation wins wherever colour is aligned with depth (ICL, synthetic; and the pipeline, whose image is
the view itself); on 7-Scenes, whose colour camera is only approximately registered, it ties with nearest.
Cone rate 0.3 (against 0.15 in the table) trades ~3 % on the small disocclusions for ~6 % on the large side
regions (redkitchen side 0.242) and visibly smoother outpainted regions, so it is the default.

With no known pixel (the first view) the completer returns `SceneDepthPrior`'s depth for the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numba
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy import ndimage

from engine.fusion import nearest_fill
from splat.errors import StitchError

METHODS = ("geodesic", "nearest", "harmonic", "edge", "plane", "plane_edge")
DEFAULT_METHOD = "geodesic"
PRIOR_VERSION = 2  # bump when the prior's algorithm changes (cached benchmark results key on describe())
MIN_DEPTH = 0.05  # metres: completion never returns less
MAX_DEPTH = 1000.0
_DIRECT_MAX = 12_000  # unknowns solved directly; larger levels get a coarse start + conjugate gradients


def _check(image: np.ndarray, known_depth: np.ndarray, known_mask: np.ndarray) -> None:
    if known_depth.ndim != 2 or known_mask.shape != known_depth.shape:
        raise StitchError(
            f"known_depth {known_depth.shape} and known_mask {known_mask.shape} must be the same [H, W] shape"
        )
    if image.shape[:2] != known_depth.shape or image.ndim != 3 or image.shape[2] != 3:
        raise StitchError(f"image {image.shape} must be [H, W, 3] matching depth {known_depth.shape}")


# --- sparse membrane solver -----------------------------------------------------------------------


def edge_weights(
    image: np.ndarray | None, shape: tuple[int, int], sigma: float | None, floor: float = 0.02
) -> tuple[np.ndarray, np.ndarray]:  # wh [H, W-1], wv [H-1, W]
    """Smoothness weights between 4-neighbours: 1, or floor + exp(-|dI|^2 / (2 sigma^2)) from the image."""
    H, W = shape
    if image is None or sigma is None:
        return np.ones((H, W - 1)), np.ones((H - 1, W))
    img = np.asarray(image, dtype=np.float64)
    dh = ((img[:, 1:] - img[:, :-1]) ** 2).sum(-1)
    dv = ((img[1:] - img[:-1]) ** 2).sum(-1)
    s2 = 2.0 * sigma * sigma
    return floor + np.exp(-dh / s2), floor + np.exp(-dv / s2)


def _membrane_system(
    values: np.ndarray, known: np.ndarray, wh: np.ndarray, wv: np.ndarray
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Weighted graph Laplacian over the unknown pixels with the known ones moved to the right-hand side."""
    H, W = known.shape
    unk = ~known
    n = int(unk.sum())
    idx = np.full((H, W), -1, dtype=np.int64)
    idx[unk] = np.arange(n)
    diag = np.zeros(n)
    b = np.zeros(n)
    rows, cols, data = [], [], []
    for a_sl, b_sl, w in (
        ((slice(None), slice(None, -1)), (slice(None), slice(1, None)), wh),
        ((slice(None, -1), slice(None)), (slice(1, None), slice(None)), wv),
    ):
        ia, ib = idx[a_sl], idx[b_sl]
        ua, ub = unk[a_sl], unk[b_sl]
        both = ua & ub
        rows += [ia[both], ib[both]]
        cols += [ib[both], ia[both]]
        data += [-w[both], -w[both]]
        diag += np.bincount(ia[ua], weights=w[ua], minlength=n)
        diag += np.bincount(ib[ub], weights=w[ub], minlength=n)
        m = ua & ~ub
        b += np.bincount(ia[m], weights=w[m] * values[b_sl][m], minlength=n)
        m = ub & ~ua
        b += np.bincount(ib[m], weights=w[m] * values[a_sl][m], minlength=n)
    r = np.concatenate([*rows, np.arange(n)])
    c = np.concatenate([*cols, np.arange(n)])
    A = sp.csr_matrix((np.concatenate([*data, diag]), (r, c)), shape=(n, n))
    return A, b, unk


def _downsample(values: np.ndarray, known: np.ndarray, image: np.ndarray | None):
    """2x2 blocks: a block is known if any pixel is; its value is the mean of its known pixels."""
    H, W = known.shape
    ph, pw = H % 2, W % 2
    if ph or pw:
        values = np.pad(values, ((0, ph), (0, pw)), mode="edge")
        known = np.pad(known, ((0, ph), (0, pw)), mode="edge")
        if image is not None:
            image = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="edge")
    h, w = known.shape[0] // 2, known.shape[1] // 2
    k = known.reshape(h, 2, w, 2).sum(axis=(1, 3))
    s = np.where(known, values, 0.0).reshape(h, 2, w, 2).sum(axis=(1, 3))
    kc = k > 0
    vc = np.where(kc, s / np.maximum(k, 1), 0.0)
    ic = None if image is None else image.reshape(h, 2, w, 2, -1).mean(axis=(1, 3))
    return vc, kc, ic


def _upsample(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    H, W = shape
    up = cv2.resize(x, (2 * x.shape[1], 2 * x.shape[0]), interpolation=cv2.INTER_LINEAR)
    return up[:H, :W]


def harmonic_fill(
    values: np.ndarray,  # [H, W] values on known pixels
    known: np.ndarray,  # [H, W] bool
    image: np.ndarray | None = None,  # [H, W, 3] for edge-aware weights
    sigma: float | None = None,
    cg_iters: int = 40,
) -> np.ndarray:  # [H, W] float64, equal to values on known pixels
    """Membrane fill (weighted Laplace equation, Neumann at the border), coarse-to-fine.

    The coarsest level with <= _DIRECT_MAX unknowns is solved exactly; each finer level starts from the
    upsampled coarse solution and runs a few Jacobi-preconditioned conjugate-gradient iterations."""
    values = np.asarray(values, dtype=np.float64)
    known = np.asarray(known, dtype=bool)
    if known.all():
        return values.copy()
    if not known.any():
        raise StitchError("harmonic fill needs at least one known pixel")
    n_unknown = int((~known).sum())
    x0 = None
    if n_unknown > _DIRECT_MAX and min(known.shape) >= 16:
        vc, kc, ic = _downsample(values, known, image)
        x0 = _upsample(harmonic_fill(vc, kc, ic, sigma, cg_iters), known.shape)
    wh, wv = edge_weights(image, known.shape, sigma)
    A, b, unk = _membrane_system(values, known, wh, wv)
    if x0 is None:
        x = spla.spsolve(A.tocsc(), b)
    else:
        M = sp.diags(1.0 / A.diagonal())
        x, _ = spla.cg(A, b, x0=x0[unk], rtol=1e-6, maxiter=cg_iters, M=M)
    out = values.copy()
    out[unk] = x
    return out


# --- plane-aware extrapolation --------------------------------------------------------------------


def _grid_laplacian(shape: tuple[int, int], wh: np.ndarray, wv: np.ndarray) -> sp.csr_matrix:
    """Weighted graph Laplacian [N, N] of the full pixel grid (Neumann border)."""
    H, W = shape
    idx = np.arange(H * W).reshape(H, W)
    i = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
    j = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
    w = np.concatenate([wh.ravel(), wv.ravel()])
    n = H * W
    A = sp.csr_matrix(
        (np.concatenate([-w, -w]), (np.concatenate([i, j]), np.concatenate([j, i]))), shape=(n, n)
    )
    return (A + sp.diags(-np.asarray(A.sum(axis=1)).ravel())).tocsr()


def tension_fill(
    values: np.ndarray,  # [h, w] values on known pixels
    known: np.ndarray,  # [h, w] bool
    length: float,  # pixels over which the slope is continued before flattening
    band: int = 3,  # known pixels within this distance of the hole are soft (smooths noisy slopes)
    softness: float = 1.0,
) -> np.ndarray:  # [h, w]
    """Spline in tension: minimise |L x|^2 + (1/length^2) x^T L x (+ soft data term on the band).

    With a long `length` it continues planes (linear in inverse depth) across the hole; with a short one it
    behaves like the membrane fill. Solved directly: meant for a coarse level."""
    H, W = known.shape
    dist = ndimage.distance_transform_edt(known)  # distance of known pixels to the nearest unknown pixel
    soft = known & (dist <= band)
    free = (~known) | soft
    # Variables: free pixels plus the known pixels the bi-Laplacian reaches from them (2 rings), fixed.
    L = _grid_laplacian((H, W), np.ones((H, W - 1)), np.ones((H - 1, W)))
    f = np.flatnonzero(free.ravel())
    c = np.flatnonzero(~free.ravel())
    z = values.ravel()
    Lf, Lc = L[:, f], L[:, c]
    lam = 1.0 / max(length, 1.0) ** 2
    s = soft.ravel()[f].astype(np.float64) * softness
    Q = (Lf.T @ Lf) + lam * L[f][:, f] + sp.diags(s)
    rhs = -(Lf.T @ (Lc @ z[c])) - lam * (L[f][:, c] @ z[c]) + s * z[f]
    x = spla.spsolve(Q.tocsc(), rhs)
    out = values.astype(np.float64).copy().ravel()
    out[f] = x
    return out.reshape(H, W)


def plane_fill(
    values: np.ndarray,  # [H, W] inverse depth on known pixels
    known: np.ndarray,  # [H, W] bool
    image: np.ndarray | None = None,
    sigma: float | None = None,
    length: float = 120.0,
    coarse_pixels: int = 4_000,
) -> np.ndarray:
    """Coarse tension-spline extrapolation + full-resolution membrane correction of the residual."""
    values = np.asarray(values, dtype=np.float64)
    levels, vc, kc = 0, values, known
    while kc.size > coarse_pixels and min(kc.shape) >= 8:
        vc, kc, _ = _downsample(vc, kc, None)
        levels += 1
    if kc.all() or not kc.any():
        return harmonic_fill(values, known, image, sigma)
    coarse = tension_fill(vc, kc, length / (2**levels))
    up = coarse
    for _ in range(levels):
        up = cv2.resize(up, (2 * up.shape[1], 2 * up.shape[0]), interpolation=cv2.INTER_LINEAR)
    up = up[: known.shape[0], : known.shape[1]]
    residual = harmonic_fill(np.where(known, values - up, 0.0), known, image, sigma)
    return up + residual


# --- colour-geodesic propagation (the default) ----------------------------------------------------

_FORWARD = ((-1, -1), (-1, 0), (-1, 1), (0, -1))  # raster-scan neighbours already visited


@numba.njit(cache=True)
def _geodesic_sources(known, image, beta, sweeps):  # pragma: no cover - compiled
    """Two-pass raster-scan geodesic distance transform (Toivanen-style) on the pixel grid.

    The step between 4/8-neighbours p, q costs sqrt(|p - q|^2 + beta^2 |I_p - I_q|^2); every unknown pixel
    gets the (row, col) of the known pixel with the smallest path cost."""
    H, W = known.shape
    dist = np.full((H, W), np.inf)
    src = np.zeros((H, W, 2), np.int64)
    for y in range(H):
        for x in range(W):
            if known[y, x]:
                dist[y, x] = 0.0
                src[y, x, 0] = y
                src[y, x, 1] = x
    b2 = beta * beta
    C = image.shape[2]
    for _ in range(sweeps):
        for direction in (1, -1):
            for yy in range(H):
                y = yy if direction == 1 else H - 1 - yy
                for xx in range(W):
                    x = xx if direction == 1 else W - 1 - xx
                    if known[y, x]:
                        continue
                    for k in range(4):
                        dy = _FORWARD[k][0] * direction
                        dx = _FORWARD[k][1] * direction
                        qy = y + dy
                        qx = x + dx
                        if qy < 0 or qy >= H or qx < 0 or qx >= W:
                            continue
                        dq = dist[qy, qx]
                        if dq == np.inf:
                            continue
                        c = 0.0
                        for ch in range(C):
                            t = image[y, x, ch] - image[qy, qx, ch]
                            c += t * t
                        cand = dq + np.sqrt(dy * dy + dx * dx + b2 * c)
                        if cand < dist[y, x]:
                            dist[y, x] = cand
                            src[y, x, 0] = src[qy, qx, 0]
                            src[y, x, 1] = src[qy, qx, 1]
    return dist, src


def geodesic_fill(
    values: np.ndarray,  # [H, W] values on known pixels
    known: np.ndarray,  # [H, W] bool
    image: np.ndarray,  # [H, W, 3] in [0, 1]
    beta: float = 600.0,
    blur: float = 1.0,
    sweeps: int = 2,
) -> np.ndarray:  # [H, W]
    """Every unknown pixel copies the known pixel closest along image paths that avoid colour edges.

    beta weighs colour against distance (a colour step of 0.1 costs as much as 60 px with beta=600); the
    image is blurred by `blur` px first so that texture and noise do not count as edges. beta=0: nearest."""
    img = np.asarray(image, dtype=np.float32)
    if blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    _, src = _geodesic_sources(
        np.ascontiguousarray(known), np.ascontiguousarray(img), float(beta), int(sweeps)
    )
    return np.where(known, values, values[src[..., 0], src[..., 1]])


def cone_smooth(values: np.ndarray, known: np.ndarray, rate: float) -> np.ndarray:  # [H, W] -> [H, W]
    """Blur the filled region with a Gaussian whose sigma grows as rate x (distance to the known region):
    propagated values stay sharp at the seam and lose their streaks far from it. The blur averages filled
    pixels only (normalised convolution), so known depth across an edge never leaks into the fill."""
    if rate <= 0 or known.all():
        return values
    fill = (~known).astype(np.float32)
    dist = ndimage.distance_transform_edt(~known)
    sig = rate * dist
    num0 = (values * fill).astype(np.float32)
    levels, nums, dens = [0.0], [num0], [fill]
    s = 1.0
    while s <= max(float(sig.max()), 1.0) * 2:
        if s < 8:
            nums.append(cv2.GaussianBlur(num0, (0, 0), s))
            dens.append(cv2.GaussianBlur(fill, (0, 0), s))
        else:  # wide blurs on a 4x smaller copy (same result, far cheaper)
            for src, dst in ((num0, nums), (fill, dens)):
                small = cv2.resize(src, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
                small = cv2.GaussianBlur(small, (0, 0), s / 4)
                dst.append(cv2.resize(small, values.shape[::-1], interpolation=cv2.INTER_LINEAR))
        levels.append(s)
        s *= 2
    pos = np.interp(sig, levels, np.arange(len(levels)))
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, len(levels) - 1)
    t = (pos - lo).astype(np.float32)
    yy, xx = np.indices(values.shape)
    num, den = np.stack(nums), np.stack(dens)
    n = (1 - t) * num[lo, yy, xx] + t * num[hi, yy, xx]
    d = (1 - t) * den[lo, yy, xx] + t * den[hi, yy, xx]
    smooth = np.where(d > 1e-6, n / np.maximum(d, 1e-6), values)
    return np.where(known, values, smooth)


# --- the completers -------------------------------------------------------------------------------


def _inverse_range(known_depth: np.ndarray, known_mask: np.ndarray) -> tuple[float, float]:
    """Inverse-depth clamp for filled pixels: a generous band around the known depths."""
    d = known_depth[known_mask]
    lo = max(float(d.min()) * 0.5, MIN_DEPTH)
    hi = min(float(d.max()) * 4.0, MAX_DEPTH)
    return 1.0 / hi, 1.0 / lo


@dataclass
class ClassicalDepthCompleter:
    """Geometric completion of the known depth (see module doc); the scene prior for an empty mask."""

    method: str = DEFAULT_METHOD
    beta: float = 600.0  # "geodesic": colour weight of the path cost
    blur: float = 1.0  # "geodesic": image blur (px) before measuring colour steps
    cone: float = 0.3  # "geodesic"/"nearest": smoothing sigma per pixel of distance from the known region
    sigma: float = 0.08  # "edge"/"plane_edge": colour difference at which smoothness weights drop
    plane_length: float = 120.0  # "plane": pixels over which a slope is continued
    prior: SceneDepthPrior | None = None
    name: str = "classical"
    # The pipeline hands over distances along the rays (depth.complete_in_view: no swelling in 360).
    fills_ray_distance: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise StitchError(
                f"unknown classical depth method {self.method!r}; choose one of {', '.join(METHODS)}"
            )
        if self.prior is None:
            self.prior = SceneDepthPrior()

    def describe(self) -> dict:
        d = {"backend": self.name, "method": self.method}
        if self.method == "geodesic":
            d.update(beta=self.beta, blur=self.blur, cone=self.cone)
        elif self.method == "nearest":
            d.update(cone=self.cone)
        elif self.method in ("edge", "plane_edge"):
            d.update(sigma=self.sigma)
        if self.method.startswith("plane"):
            d.update(plane_length=self.plane_length)
        d["prior"] = self.prior.describe()
        d["fill_space"] = "ray distance" if self.fills_ray_distance else "z-depth"
        d["note"] = "classical geometric completion (offline fallback, no learned model)"
        return d

    def __call__(self, image: np.ndarray, known_depth: np.ndarray, known_mask: np.ndarray) -> np.ndarray:
        image = np.asarray(image, dtype=np.float32)
        known_depth = np.asarray(known_depth, dtype=np.float32)
        mask = np.asarray(known_mask, dtype=bool)
        _check(image, known_depth, mask)
        mask = mask & np.isfinite(known_depth) & (known_depth > 0)
        if not mask.any():
            return self.prior(image)
        if mask.all():
            return known_depth.copy()
        inv = np.where(mask, 1.0 / np.where(mask, known_depth, 1.0), 0.0)
        if self.method == "geodesic":
            filled = cone_smooth(geodesic_fill(inv, mask, image, self.beta, self.blur), mask, self.cone)
        elif self.method == "nearest":
            filled = cone_smooth(nearest_fill(inv, mask), mask, self.cone)
        elif self.method == "harmonic":
            filled = harmonic_fill(inv, mask)
        elif self.method == "edge":
            filled = harmonic_fill(inv, mask, image, self.sigma)
        elif self.method == "plane":
            filled = plane_fill(inv, mask, length=self.plane_length)
        else:  # plane_edge
            filled = plane_fill(inv, mask, image, self.sigma, length=self.plane_length)
        lo, hi = _inverse_range(known_depth, mask)
        depth = 1.0 / np.clip(filled, lo, hi)
        return np.where(mask, known_depth, depth).astype(np.float32)


@dataclass
class NearestFillCompleter(ClassicalDepthCompleter):
    """Baseline: every unknown pixel copies the depth of its nearest known pixel (plain propagation)."""

    method: str = "nearest"
    cone: float = 0.0
    name: str = "nearest"


# --- the first-view prior -------------------------------------------------------------------------


def sky_mask(image: np.ndarray, overcast: bool = True) -> np.ndarray:  # [H, W, 3] in [0, 1] -> [H, W] bool
    """Sky-like pixels connected to the top edge: blue (or, if `overcast`, also bright grey-white) and
    smooth (little texture)."""
    img = np.asarray(image, dtype=np.float32)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)  # H in degrees, S and V in [0, 1]
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    candidate = (h > 185) & (h < 245) & (s > 0.2) & (v > 0.45)  # a tinted white wall has s ~ 0.1-0.15
    if overcast:
        candidate |= (s < 0.12) & (v > 0.82)
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    texture = cv2.GaussianBlur(np.abs(cv2.Laplacian(gray, cv2.CV_32F)), (0, 0), 2.0)
    candidate &= texture < 0.02
    candidate = ndimage.binary_opening(candidate, structure=np.ones((3, 3), bool))
    labels, n = ndimage.label(candidate)
    if n == 0:
        return np.zeros_like(candidate)
    top = np.unique(labels[0][labels[0] > 0])
    return np.isin(labels, top)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter with a grey guide [H, W] (box filters only): src [H, W] -> [H, W].
    The output is locally an affine function of the guide, so it follows the guide's edges."""
    size = (2 * radius + 1, 2 * radius + 1)

    def box(a: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(a, -1, size, borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = box(guide), box(src)
    cov_ip = box(guide * src) - mean_i * mean_p
    var_i = box(guide * guide) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box(a) * guide + box(b)


@dataclass
class SceneDepthPrior:
    """A deterministic, documented depth for a photo with no known depth (the first view, offline).

    Layout: a level pinhole camera (focal = image width, horizon on the centre row, as the trajectories
    assume) at height `camera_height` above a ground plane, which meets a back wall at `far` metres. So a
    pixel below the horizon has depth min(h f / (v - v_horizon), far) and every pixel above it `far`.
    Image cues, all mild:
    - blue sky (smooth, touching the top edge) over `sky_fraction_outdoor` of the upper third marks the photo
      as outdoor: the outdoor layout (camera 1.6 m high, far plane 12 m, sky - blue or bright-overcast - at
      20 m) replaces the indoor one (0.6 m, 4 m: indoor photos are close-ups taken looking slightly down).
      White walls look like overcast sky, so overcast alone never makes a photo outdoor;
    - a central "subject" bump brings the centre of the lower image up to `subject_gain` closer in inverse
      depth (photos are framed around a subject in front of the background);
    - bright areas of the upper half (windows, lamps, a light sky) are pushed back by up to `bright_gain`;
    - the result is smoothed in inverse depth (no crease where ground meets wall), then passed through a
      guided filter with the photo as guide (`guide_strength`) so its changes snap to the photo's edges;
      the sky line stays sharp.
    Depth is in metres, within [0.5, 20]."""

    indoor_height: float = 0.6
    indoor_far: float = 4.0
    outdoor_height: float = 1.6
    outdoor_far: float = 12.0
    sky_depth: float = 20.0
    subject_gain: float = 0.35
    bright_gain: float = 0.3
    guide_strength: float = 0.5
    sky_fraction_outdoor: float = 0.08  # of the upper third of the image
    name: str = "scene-prior"

    def describe(self) -> dict:
        return {
            "prior": self.name,
            "version": PRIOR_VERSION,
            "indoor": [self.indoor_height, self.indoor_far],
            "outdoor": [self.outdoor_height, self.outdoor_far],
            "sky_depth": self.sky_depth,
            "subject_gain": self.subject_gain,
            "bright_gain": self.bright_gain,
            "guide_strength": self.guide_strength,
        }

    def analyse(self, image: np.ndarray) -> dict:
        """The cues the prior uses: sky mask and whether the photo counts as outdoor."""
        blue = sky_mask(image, overcast=False)
        H = blue.shape[0]
        frac = float(blue[: max(1, H // 3)].mean())
        outdoor = frac >= self.sky_fraction_outdoor
        sky = sky_mask(image) if outdoor else np.zeros_like(blue)
        return {"sky": sky, "sky_fraction": frac, "outdoor": outdoor}

    def __call__(self, image: np.ndarray) -> np.ndarray:  # [H, W, 3] -> [H, W] float32 metres
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 3 or image.shape[2] != 3:
            raise StitchError(f"the scene prior needs an [H, W, 3] image, got {image.shape}")
        H, W = image.shape[:2]
        cues = self.analyse(image)
        height, far = (
            (self.outdoor_height, self.outdoor_far)
            if cues["outdoor"]
            else (self.indoor_height, self.indoor_far)
        )
        f = float(W)
        v = np.arange(H, dtype=np.float64) + 0.5 - H / 2.0  # rows below the horizon are positive
        inv_ground = np.clip(v, 0.0, None) / (height * f)  # 1 / depth of the ground plane
        inv = np.maximum(inv_ground, 1.0 / far)[:, None].repeat(W, axis=1)
        # Central subject: nearer by up to subject_gain, strongest a little below the centre.
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
        r2 = ((xx + 0.5 - W / 2) / (0.3 * W)) ** 2 + ((yy + 0.5 - 0.6 * H) / (0.3 * H)) ** 2
        inv *= 1.0 + self.subject_gain * np.exp(-0.5 * r2)
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)
        upper = np.clip((H / 2.0 - yy) / (H / 2.0), 0.0, 1.0)  # 1 at the top row, 0 from the horizon down
        bright = np.clip((gray - 0.7) / 0.3, 0.0, 1.0) * upper
        inv *= 1.0 - self.bright_gain * cv2.GaussianBlur(bright, (0, 0), 0.01 * W + 1)
        inv = cv2.GaussianBlur(inv, (0, 0), 0.03 * W)
        if self.guide_strength > 0:
            guided = guided_filter(gray, inv, max(2, W // 24), eps=1e-3 * float(inv.mean()) ** 2)
            inv = np.clip(
                (1 - self.guide_strength) * inv + self.guide_strength * guided, 0.5 * inv, 2.0 * inv
            )
        if cues["outdoor"]:
            sky = cv2.GaussianBlur(cues["sky"].astype(np.float64), (0, 0), 2.0)
            inv = sky / self.sky_depth + (1.0 - sky) * inv
        depth = 1.0 / inv
        return np.clip(depth, 0.5, self.sky_depth).astype(np.float32)


# --- user-supplied depth ----------------------------------------------------------------------------

MAX_DEPTH_FILE_PIXELS = 100_000_000  # parsers bound allocations


def _check_png_size(path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            w, h = img.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise StitchError(f"depth file {path} is not a readable PNG ({exc.__class__.__name__})") from exc
    if w * h > MAX_DEPTH_FILE_PIXELS:
        raise StitchError(f"depth file {path} is too large ({w}x{h}); downscale it")


def load_depth_file(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Read a user depth map for the first view -> [H, W] float32 metres, 0 = unknown.

    size = (height, width) of the image. Accepted: a 16-bit PNG in millimetres or a .npy array in metres;
    0 (or negative) marks unknown pixels, NaN/Inf are refused. A map of another size is resized to the
    image with nearest-neighbour sampling (keeps unknown pixels and edges crisp); its aspect ratio must
    match the image's within 2 %."""
    path = Path(path)
    H, W = (int(size[0]), int(size[1]))
    if not path.is_file():
        raise StitchError(f"depth file {path} does not exist; check --depth-file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise StitchError(
                f"depth file {path} is not a plain .npy array ({exc}); save it with numpy.save"
            ) from exc
        if arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]):
            arr = arr.reshape(arr.shape[1:] if arr.shape[0] == 1 else arr.shape[:2])
        if arr.ndim != 2 or arr.dtype.kind not in "fiu":
            raise StitchError(
                f"depth file {path} must hold a 2D numeric [H, W] array (metres), got {arr.dtype} {arr.shape}"
            )
        if arr.size > MAX_DEPTH_FILE_PIXELS:
            raise StitchError(f"depth file {path} is too large ({arr.shape}); downscale it")
        depth = np.array(arr, dtype=np.float32)
        if not np.isfinite(depth).all():
            raise StitchError(f"depth file {path} contains NaN or Inf; use 0 for unknown pixels")
    elif suffix == ".png":
        _check_png_size(path)  # from the header: a tiny file can claim 20000x20000 (GBs once decoded)
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise StitchError(f"depth file {path} is not a readable PNG")
        if raw.dtype != np.uint16 or raw.ndim != 2:
            raise StitchError(
                f"depth file {path} is {raw.dtype} {raw.shape}; give a single-channel 16-bit PNG in mm"
            )
        depth = raw.astype(np.float32) / 1000.0
    else:
        raise StitchError(
            f"depth file {path} must be a 16-bit PNG (mm) or a .npy array (m), not {suffix or 'no suffix'}"
        )
    depth[depth < 0] = 0.0
    if not (depth > 0).any():
        raise StitchError(
            f"depth file {path} has no positive depth; it must hold depth in metres (.npy) or mm (.png)"
        )
    h, w = depth.shape
    if abs((w / h) / (W / H) - 1.0) > 0.02:
        raise StitchError(
            f"depth file {path} is {w}x{h} but the image is {W}x{H} (another aspect ratio); crop it to match"
        )
    if (h, w) != (H, W):
        depth = cv2.resize(depth, (W, H), interpolation=cv2.INTER_NEAREST)
    return depth
