"""The first-view depth prior: a deterministic, documented depth for a photo with no known depth."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from splat.errors import StitchError

PRIOR_VERSION = 2  # bump when the prior's algorithm changes (cached benchmark results key on describe())


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
