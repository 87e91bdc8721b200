"""Outpainting: fill the pixels of a new view that the scene does not cover.

`Outpainter` is the protocol the pipeline calls, with the helpers every outpainter shares (paste the known
pixels back, a smooth push-pull fill). The offline outpainters are in outpaint_classical.py; diffusers
inpainting in outpaint_diffusion.py.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import cv2
import numpy as np


@runtime_checkable
class Outpainter(Protocol):
    """image [H, W, 3] float32 in [0, 1], mask [H, W] bool (True = fill), prompt, seed -> [H, W, 3] float32.

    Pixels outside the mask must come back unchanged (the pipeline also pastes them back)."""

    name: str

    def describe(self) -> dict:
        """Backend name, model id and revision, settings: recorded in the run manifest."""
        ...

    def __call__(self, image: np.ndarray, mask: np.ndarray, prompt: str, seed: int) -> np.ndarray: ...


def paste_known(filled: np.ndarray, image: np.ndarray, mask: np.ndarray, feather_px: int = 0) -> np.ndarray:
    """Keep the known pixels exact: blend `filled` [H, W, 3] into `image` only inside `mask` [H, W].

    With feather_px > 0 the blend weight ramps from 0 at the mask border to 1 inside it, softening the seam
    on the filled side only (known pixels stay exact)."""
    weight = mask.astype(np.float32)
    if feather_px > 0 and mask.any():
        dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
        weight = np.clip(dist / float(feather_px), 0.0, 1.0) * mask
        weight[mask & (weight == 0)] = 1.0 / feather_px
    weight = weight[..., None]
    return (filled * weight + image * (1.0 - weight)).astype(np.float32)


def push_pull_fill(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Smooth fill of unknown pixels by a pyramid of masked averages (push-pull) -> [H, W, C] float32.

    Coarse levels see the known colours from far away, so large holes get a smooth low-frequency guess."""
    img = image.astype(np.float32)
    w = known.astype(np.float32)
    if not w.any():
        return np.zeros_like(img)
    levels = []
    # Down to 1x1: the coarsest level must hold no unknown pixel, or its zeros get pulled back up as black.
    while max(w.shape) > 1:
        levels.append((img, w))
        img_sum = cv2.resize(
            img * w[..., None],
            (max(1, img.shape[1] // 2), max(1, img.shape[0] // 2)),
            interpolation=cv2.INTER_AREA,
        )
        w_small = cv2.resize(w, (img_sum.shape[1], img_sum.shape[0]), interpolation=cv2.INTER_AREA)
        img = img_sum.reshape((*w_small.shape, -1)) / np.maximum(w_small, 1e-8)[..., None]
        w = (w_small > 1e-8).astype(np.float32)
    filled = img
    for img_l, w_l in reversed(levels):
        up = cv2.resize(filled, (img_l.shape[1], img_l.shape[0]), interpolation=cv2.INTER_LINEAR)
        up = up.reshape(img_l.shape)
        filled = img_l * w_l[..., None] + up * (1.0 - w_l[..., None])
    return filled
