"""The offline outpainters: `classical` (exemplar PatchMatch fill, seam blend, brightness match; the default)
and `mirror` (the earlier reflection fill, kept for comparison: --outpainter mirror)."""

from __future__ import annotations

import cv2
import numpy as np

from engine.backends.outpaint import paste_known, push_pull_fill


class ClassicalOutpainter:
    """Offline default: exemplar synthesis - the hole is rebuilt from patches of the known image, coarse
    to fine (PatchMatch completion, outpaint_exemplar.py), started from a push-pull smooth fill and
    blended into the seam. The texture continues the scene instead of mirroring it (`MirrorOutpainter`, kept
    to compare: benchmarks/bench_outpaint.py). It ignores the prompt: a classical method cannot hallucinate
    content."""

    name = "classical"
    uses_reference = True  # the pipeline passes the photo as a second texture source

    def __init__(self, patch: int = 7, seam_reach: float = 0.05) -> None:
        self.patch = patch
        self.seam_reach = seam_reach  # fraction of the image width over which the seam colour step fades

    def describe(self) -> dict:
        return {
            "backend": "classical",
            "method": "exemplar (PatchMatch) synthesis + push-pull start + seam blend",
            "model_id": None,
            "patch": self.patch,
        }

    def __call__(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        prompt: str,
        seed: int,
        reference: np.ndarray | None = None,  # [H', W', 3] more texture to copy from (the photo)
    ) -> np.ndarray:
        from engine.backends.outpaint_blend import match_row_brightness, seam_blend
        from engine.backends.outpaint_exemplar import exemplar_fill

        if not mask.any():
            return image.astype(np.float32)
        known = ~mask
        if not known.any():
            # Nothing to continue from: a neutral grey the optimiser and later views can overwrite.
            return np.full_like(image, 0.5, dtype=np.float32)
        image = image.astype(np.float32)
        smooth = push_pull_fill(image, known)
        filled = exemplar_fill(image, mask, smooth, patch=self.patch, seed=seed, reference=reference)
        filled = match_row_brightness(filled, mask, reference)
        filled = seam_blend(filled, image, mask, self.seam_reach * mask.shape[1], passes=3)
        return paste_known(np.clip(filled, 0.0, 1.0), image, mask)


class MirrorOutpainter:
    """The earlier offline method, kept for comparison (`--outpainter mirror`): reflect the known image across
    the seam, fading into a push-pull smooth fill.

    Reflection carries real texture (edges, grain) a short way into the hole, so seams stay sharp; far from
    the known region the fill becomes the smooth low-frequency continuation. OpenCV Telea inpainting mends
    the thin band along the seam. It ignores the prompt: a classical method cannot hallucinate content."""

    name = "mirror"

    def __init__(self, texture_falloff: float = 0.25, telea_radius: int = 3) -> None:
        self.texture_falloff = texture_falloff  # fraction of the image width over which texture fades out
        self.telea_radius = telea_radius

    def describe(self) -> dict:
        return {
            "backend": "mirror",
            "method": "reflection + push-pull + OpenCV Telea",
            "model_id": None,
            "texture_falloff": self.texture_falloff,
        }

    def __call__(self, image: np.ndarray, mask: np.ndarray, prompt: str, seed: int) -> np.ndarray:
        from scipy.ndimage import distance_transform_edt

        known = ~mask
        if not mask.any():
            return image.astype(np.float32)
        if not known.any():
            # Nothing to continue from: a neutral grey the optimiser and later views can overwrite.
            return np.full_like(image, 0.5, dtype=np.float32)
        dist, (iy, ix) = distance_transform_edt(mask, return_indices=True)
        h, w = mask.shape
        yy, xx = np.indices(mask.shape)
        # Mirror each hole pixel through its nearest known pixel; use that pixel if the mirror is unknown.
        ry = np.clip(2 * iy - yy, 0, h - 1)
        rx = np.clip(2 * ix - xx, 0, w - 1)
        mirrored_known = known[ry, rx]
        src_y = np.where(mirrored_known, ry, iy)
        src_x = np.where(mirrored_known, rx, ix)
        reflected = image[src_y, src_x]
        smooth = push_pull_fill(image, known)
        smooth = cv2.GaussianBlur(smooth, (0, 0), sigmaX=max(1.0, 0.01 * w))
        fade = np.exp(-dist / max(1.0, self.texture_falloff * w))[..., None]
        filled = np.where(mask[..., None], fade * reflected + (1 - fade) * smooth, image).astype(np.float32)
        # Telea mends the seam band where reflection and smooth fill meet the known pixels.
        band = mask & (dist <= 2 * self.telea_radius)
        if band.any():
            u8 = (np.clip(filled, 0, 1) * 255).astype(np.uint8)
            mended = cv2.inpaint(u8, band.astype(np.uint8), self.telea_radius, cv2.INPAINT_TELEA)
            filled[band] = mended[band].astype(np.float32) / 255.0
        return paste_known(filled, image, mask)
