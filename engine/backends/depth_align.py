"""Global scale & shift alignment of a depth prediction to the known (sparse) depth.

The "monocular + alignment" baseline of the paper (ZoeDepth + global scale & shift) and the
`depth_mono` backend both fit  known ~= s * pred + t  on the known pixels and apply it everywhere.

Two spaces:
- space="depth":   fit in metres;             output = s * pred_depth + t
- space="inverse": fit in inverse depth (1/m); output = 1 / (s * pred_inv + t)
  (natural for relative models such as MiDaS / Depth Anything, whose outputs are affine in disparity).

`pred_is_inverse` says what `pred` holds (True: an inverse-depth / disparity-like map; False: depth). If the
fit space differs from what pred holds, pred is reciprocated first.

Robust fitting is iteratively re-weighted least squares with Tukey's biweight on residuals scaled by their MAD
(deterministic, no random sampling), started from a least-squares and from a median/MAD line; the fit with
the smaller median residual wins. Outliers such as depth edges,
mixed pixels or a wrongly-predicted sky barely move the fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from splat.errors import StitchError

SPACES = ("depth", "inverse")
MIN_DEPTH = 1e-3  # metres; aligned output never goes below this
MAX_DEPTH = 1e4  # metres; inverse-space fits never go beyond this (inverse clamped at 1/MAX_DEPTH)
_MAX_FIT_POINTS = 200_000  # deterministic stride-subsampling above this (speed only)


@dataclass(frozen=True)
class Alignment:
    """target ~= scale * x + shift, with x and target in `space` (depth or inverse depth)."""

    scale: float
    shift: float
    space: str
    n_points: int  # known pixels used
    n_inliers: int  # pixels with non-zero final weight
    residual: float  # weighted mean absolute residual in `space` units

    def to_dict(self) -> dict:
        return {
            "scale": self.scale,
            "shift": self.shift,
            "space": self.space,
            "n_points": self.n_points,
            "n_inliers": self.n_inliers,
            "residual": self.residual,
        }


def _weighted_line_fit(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted least squares y ~= s x + t -> (s, t); falls back to scale-only if x is (nearly) constant."""
    sw = w.sum()
    if sw <= 0:
        return 1.0, 0.0
    mx = float((w * x).sum() / sw)
    my = float((w * y).sum() / sw)
    dx = x - mx
    var = float((w * dx * dx).sum() / sw)
    if var <= 1e-12 * max(mx * mx, 1e-12):
        s = my / mx if abs(mx) > 1e-12 else 1.0
        return s, 0.0
    s = float((w * dx * (y - my)).sum() / sw) / var
    return s, my - s * mx


def fit_scale_shift(
    x: np.ndarray,  # [M] prediction in the fit space
    y: np.ndarray,  # [M] target in the fit space
    robust: bool = True,
    iterations: int = 10,
    tukey_c: float = 4.685,
) -> tuple[float, float, np.ndarray]:
    """Fit y ~= s x + t -> (s, t, weights [M]). Robust mode: IRLS with Tukey's biweight (MAD-scaled)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.ones_like(x)
    s, t = _weighted_line_fit(x, y, w)
    if not robust or len(x) < 3:
        return s, t, w
    # Two deterministic starts: least squares (fine for mild outliers, clustered data) and a median/MAD
    # line (resists a large outlier group); IRLS from each, keep the fit with the smaller median residual.
    xm, ym = float(np.median(x)), float(np.median(y))
    xs = float(np.median(np.abs(x - xm)))
    ys = float(np.median(np.abs(y - ym)))
    starts = [(s, t)]
    if xs > 1e-12 and ys > 1e-12:
        starts.append((ys / xs, ym - ys / xs * xm))
    best = None
    for s0, t0 in starts:
        s_i, t_i, w_i = _irls(x, y, s0, t0, iterations, tukey_c, abs(ym))
        score = float(np.median(np.abs(y - (s_i * x + t_i))))
        if best is None or score < best[0]:
            best = (score, s_i, t_i, w_i)
    return best[1], best[2], best[3]


def _irls(x, y, s, t, iterations: int, tukey_c: float, y_scale: float) -> tuple[float, float, np.ndarray]:
    w = np.ones_like(x)
    for _ in range(iterations):
        r = y - (s * x + t)
        mad = float(np.median(np.abs(r - np.median(r))))
        sigma = 1.4826 * mad + 1e-9 * (y_scale + 1e-9)
        u = r / (tukey_c * sigma)
        w = np.where(np.abs(u) < 1.0, (1.0 - u * u) ** 2, 0.0)
        if w.sum() < 2:
            w = np.ones_like(x)
        s_new, t_new = _weighted_line_fit(x, y, w)
        converged = abs(s_new - s) <= 1e-7 * abs(s) + 1e-12 and abs(t_new - t) <= 1e-7 * (abs(t) + y_scale)
        s, t = s_new, t_new
        if converged:
            break
    return s, t, w


def _to_space(pred: np.ndarray, pred_is_inverse: bool, space: str) -> np.ndarray:
    """pred (depth or inverse depth) -> values in the fit space; non-positive values become NaN."""
    p = np.asarray(pred, dtype=np.float64)
    p = np.where(np.isfinite(p) & (p > 0), p, np.nan)
    want_inverse = space == "inverse"
    if pred_is_inverse == want_inverse:
        return p
    return 1.0 / p


def estimate_alignment(
    pred: np.ndarray,  # [H, W] model output (depth, or inverse depth if pred_is_inverse)
    known: np.ndarray,  # [H, W] metres, > 0 on known pixels
    mask: np.ndarray,  # [H, W] bool, known pixels
    space: str = "depth",
    robust: bool = True,
    pred_is_inverse: bool | None = None,
) -> Alignment:
    """Fit the global scale & shift that maps `pred` onto `known` on `mask` (see module doc)."""
    if space not in SPACES:
        raise StitchError(f"alignment space must be one of {SPACES}, got {space!r}")
    pred = np.asarray(pred)
    known = np.asarray(known)
    mask = np.asarray(mask, dtype=bool)
    if pred.shape != known.shape or mask.shape != known.shape or pred.ndim != 2:
        raise StitchError(
            f"pred {pred.shape}, known {known.shape} and mask {mask.shape} must be the same [H, W] shape"
        )
    if pred_is_inverse is None:
        pred_is_inverse = False
    x_all = _to_space(pred, pred_is_inverse, space)
    kd = known.astype(np.float64)
    use = mask & np.isfinite(kd) & (kd > 0) & np.isfinite(x_all)
    n = int(use.sum())
    if n == 0:
        return Alignment(1.0, 0.0, space, 0, 0, float("nan"))
    x = x_all[use]
    y = kd[use] if space == "depth" else 1.0 / kd[use]
    if n > _MAX_FIT_POINTS:
        stride = int(np.ceil(n / _MAX_FIT_POINTS))
        x, y = x[::stride], y[::stride]
    if n < 2:
        s, t, w = (float(y[0] / x[0]) if x[0] != 0 else 1.0), 0.0, np.ones(1)
    else:
        s, t, w = fit_scale_shift(x, y, robust=robust)
    if not (np.isfinite(s) and np.isfinite(t)) or s <= 0:
        # A non-positive scale inverts the depth ordering: fall back to a robust scale-only fit.
        ratio = y / np.where(x != 0, x, np.nan)
        s = float(np.nanmedian(ratio)) if np.isfinite(ratio).any() else 1.0
        s = s if np.isfinite(s) and s > 0 else 1.0
        t = 0.0
        w = np.ones_like(x)
    resid = float((w * np.abs(y - (s * x + t))).sum() / max(w.sum(), 1e-12))
    return Alignment(float(s), float(t), space, n, int((w > 0).sum()), resid)


def apply_alignment(
    pred: np.ndarray, alignment: Alignment, pred_is_inverse: bool = False
) -> np.ndarray:  # -> [H, W] float32 metres, > 0
    """Map the prediction through a fitted alignment to metric depth (clamped to stay positive and finite)."""
    x = _to_space(pred, pred_is_inverse, alignment.space)
    v = alignment.scale * x + alignment.shift
    if alignment.space == "depth":
        d = v
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            d = 1.0 / np.maximum(v, 1.0 / MAX_DEPTH)
    finite = np.isfinite(d)
    if not finite.all():
        fill = float(np.median(d[finite])) if finite.any() else 1.0
        d = np.where(finite, d, fill)
    return np.clip(d, MIN_DEPTH, MAX_DEPTH).astype(np.float32)


def align_scale_shift(
    pred: np.ndarray,  # [H, W] model output: depth, or inverse depth if pred_is_inverse
    known: np.ndarray,  # [H, W] metres (0 = unknown)
    mask: np.ndarray,  # [H, W] bool, known pixels
    space: str = "depth",
    robust: bool = True,
    pred_is_inverse: bool | None = None,
    keep_known: bool = False,
) -> np.ndarray:  # [H, W] float32 metres, > 0
    """Align a monocular prediction to the known depth by one global scale & shift -> metric depth.

    space: "depth" fits metres, "inverse" fits inverse depth (see module doc). With no known pixels the
    prediction is returned unchanged (as depth). keep_known=True copies the known depth back exactly.
    """
    inv = bool(pred_is_inverse) if pred_is_inverse is not None else False
    alignment = estimate_alignment(pred, known, mask, space=space, robust=robust, pred_is_inverse=inv)
    out = apply_alignment(pred, alignment, pred_is_inverse=inv)
    if keep_known:
        m = np.asarray(mask, dtype=bool) & (np.asarray(known) > 0)
        out = np.where(m, np.asarray(known, dtype=np.float32), out)
    return out
