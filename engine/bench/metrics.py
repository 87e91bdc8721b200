"""How the geometry benchmark scores a completed depth map: errors on the pixels the method was not given."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

METRICS = ("mae", "rmse", "absrel", "delta1", "seam_mae")


def depth_metrics(
    pred: np.ndarray,  # [H, W] metres
    gt: np.ndarray,  # [H, W] metres, 0 = no ground truth
    covered: np.ndarray,  # [H, W] bool, the pixels the method was given
    band_px: float = 10.0,
) -> dict[str, float]:
    """Scores on uncovered pixels with ground truth (see module doc); NaN where a set is empty."""
    evaluate = (~covered) & (gt > 0) & np.isfinite(gt)
    n = int(evaluate.sum())
    out: dict[str, float] = {"n_pixels": float(n)}
    p = np.asarray(pred, dtype=np.float64)[evaluate]
    g = np.asarray(gt, dtype=np.float64)[evaluate]
    if n == 0:
        out.update({k: math.nan for k in METRICS})
        out["n_seam"] = 0.0
        return out
    err = np.abs(p - g)
    out["mae"] = float(err.mean())
    out["rmse"] = float(np.sqrt((err**2).mean()))
    out["absrel"] = float((err / g).mean())
    ratio = np.maximum(p / g, g / np.maximum(p, 1e-9))
    out["delta1"] = float((ratio < 1.25).mean())
    if covered.any():
        dist = ndimage.distance_transform_edt(~covered)  # distance to the nearest covered pixel
        band = evaluate & (dist <= band_px)
    else:
        band = np.zeros_like(evaluate)
    out["n_seam"] = float(band.sum())
    out["seam_mae"] = float(np.abs(pred[band] - gt[band]).mean()) if band.any() else math.nan
    return out
