"""Blend an outpainted fill into its image: per-row brightness matching, then the colour step at the seam.

Both run after the exemplar fill (outpaint_exemplar.py) in `ClassicalOutpainter`; known pixels never change.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from engine.backends.outpaint import push_pull_fill
from engine.images import luminance


def seam_blend(
    filled: np.ndarray, image: np.ndarray, hole: np.ndarray, reach_px: float, passes: int = 1
) -> np.ndarray:
    """Remove the colour step at the hole border: at each hole pixel next to the border, the mean of the known
    pixels around it minus the mean of the filled ones is the step; spread it into the hole (a push-pull
    membrane, a cheap Poisson-blend stand-in) and fade it out over `reach_px`. Later passes remove what the
    first left (the local means overlap); what does not change between passes is computed once."""
    inner = hole & ndimage.binary_dilation(~hole, iterations=2)
    if not inner.any() or hole.all():
        return filled

    def local_mean(values: np.ndarray, where: np.ndarray) -> np.ndarray:
        w = cv2.boxFilter(where.astype(np.float32), -1, (7, 7), normalize=False)
        v = cv2.boxFilter((values * where[..., None]).astype(np.float32), -1, (7, 7), normalize=False)
        return v / np.maximum(w, 1e-6)[..., None]

    known_mean = local_mean(image, ~hole)
    fade = np.exp(-ndimage.distance_transform_edt(hole) / max(reach_px, 1.0))[..., None]
    for _ in range(passes):
        step = known_mean - local_mean(filled, hole)
        residual = np.where(inner[..., None], step, 0.0).astype(np.float32)
        spread = push_pull_fill(residual, inner)
        filled = np.where(hole[..., None], filled + fade * spread, image).astype(np.float32)
    return filled


def match_row_brightness(
    filled: np.ndarray,  # [H, W, 3]
    hole: np.ndarray,  # [H, W] bool
    reference: np.ndarray | None = None,  # [H', W', 3] the photo: the exposure the whole scene should keep
    bands: int = 8,
    max_gain: float = 1.25,
) -> np.ndarray:
    """Scale the filled pixels, per horizontal band, towards the brightness of the known pixels in that band
    (and of the photo's same band, half and half, when given).

    Why: patch search prefers dark, low-contrast patches a little (they match blurred targets best), so a
    chain of views drifted darker by ~2 % per view (0.94 -> 0.77 of the photo over 12 views of 360 mode).
    Rows are the right unit for a turning camera: sky, walls and floor keep their heights."""
    h = hole.shape[0]
    lum = luminance(filled)
    ref_lum = None
    if reference is not None:
        ref = cv2.resize(reference.astype(np.float32), (reference.shape[1], h), interpolation=cv2.INTER_AREA)
        ref_lum = luminance(ref)
    edges = np.linspace(0, h, bands + 1).round().astype(int)
    gains = np.ones(bands, np.float32)
    for b in range(bands):
        rows = slice(edges[b], edges[b + 1])
        fill = hole[rows]
        if fill.sum() < 16:
            continue
        targets = []
        if (~fill).sum() >= 16:
            targets.append(float(lum[rows][~fill].mean()))
        if ref_lum is not None:
            targets.append(float(ref_lum[rows].mean()))
        if not targets:
            continue
        gains[b] = np.mean(targets) / max(float(lum[rows][fill].mean()), 1e-4)
    gains = np.clip(gains, 1 / max_gain, max_gain)
    centres = (edges[:-1] + edges[1:]) / 2
    gain_rows = np.interp(np.arange(h) + 0.5, centres, gains).astype(np.float32)
    scaled = np.clip(filled * gain_rows[:, None, None], 0.0, 1.0)
    return np.where(hole[..., None], scaled, filled).astype(np.float32)
