"""Fill the unknown pixels of a scalar field from its known pixels: the classical depth completer's kernels.

Membrane (`harmonic_fill`, optionally edge-aware), plane-continuing spline in tension (`tension_fill`,
`plane_fill`), colour-geodesic propagation (`geodesic_fill`, numba) and the distance-growing blur that
removes its streaks (`cone_smooth`). Known pixels always come back unchanged. Which one the pipeline uses and
why: engine/backends/depth_classical.py.
"""

from __future__ import annotations

import cv2
import numba
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy import ndimage

from splat.errors import StitchError

_DIRECT_MAX = 12_000  # unknowns solved directly; larger levels get a coarse start + conjugate gradients


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
