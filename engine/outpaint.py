"""Outpainting: fill the pixels of a new view that the scene does not cover.

`Outpainter` is the protocol the pipeline calls; `ClassicalOutpainter` is the offline default. Learned
backends (diffusers inpainting) live in engine/outpaint_diffusion.py and satisfy the same protocol.
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
