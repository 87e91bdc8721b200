"""What a benchmark method is given: frame i's ground-truth geometry rendered into frame j (known depth).

Seeded as the pipeline seeds new pixels (Gaussians.from_points with FusionConfig's scale factor, scale rule
and opacity, colour from frame i) and rendered with the project's renderer; covered = alpha > 0.5 eroded by
a disk of radius 2, as the pipeline does (engine.fusion.coverage_masks).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from engine.bench.rgbd import RGBDFrame
from engine.config import FusionConfig
from engine.fusion import coverage_masks
from splat.errors import StitchError

_SEEDING = FusionConfig()  # how generation seeds a view's new pixels: the benchmark's known depth follows it


@dataclass
class PartialDepth:
    known_depth: np.ndarray  # [H, W] float32 metres, 0 off `covered`
    covered: np.ndarray  # [H, W] bool (alpha > 0.5, eroded)
    alpha: np.ndarray  # [H, W] float32
    renderer: str


def render_partial_depth(
    src: RGBDFrame,
    dst: RGBDFrame,
    scale_factor: float = _SEEDING.scale_factor,
    opacity: float = _SEEDING.first_opacity,
    erode_px: int = _SEEDING.erode_px,
    threshold: float = _SEEDING.coverage_threshold,
    scale_rule: str = _SEEDING.scale_rule,
    renderer: str = "auto",
) -> PartialDepth:
    """Render frame `src`'s ground-truth geometry into `dst`'s camera -> known depth on the covered pixels.

    renderer: "splat" (Gaussians + splat.render.render_camera), "points" (splat.cameras.warp_depth z-buffer,
    a fallback without the Gaussian renderer) or "auto" (splat if importable)."""
    from splat.cameras import unproject_depth, warp_depth

    if renderer == "auto":
        try:
            importlib.import_module("splat.render")
            renderer = "splat"
        except ImportError:
            renderer = "points"
    valid = src.valid
    cam = dst.camera
    if renderer == "splat":
        import torch

        from splat.gaussians import Gaussians
        from splat.render import render_camera

        points = unproject_depth(src.camera, src.depth, valid)  # [M, 3]
        gaussians = Gaussians.from_points(
            points,
            src.image[valid],
            sh_degree=0,
            opacity=opacity,
            scale_factor=scale_factor,
            scale_rule=scale_rule,
        )
        with torch.no_grad():
            out = render_camera(gaussians, cam)
        alpha = out.alpha[0, ..., 0].numpy().astype(np.float32)
        depth = out.depth[0, ..., 0].numpy().astype(np.float32)
    elif renderer == "points":
        depth = warp_depth(src.camera, src.depth, cam, valid).astype(np.float32)
        hit = depth > 0
        # Close the pinholes of a point splat (the Gaussian renderer has none) before thresholding.
        closed = ndimage.binary_closing(hit, structure=np.ones((3, 3), bool), border_value=1)
        depth = np.where(hit, depth, ndimage.maximum_filter(depth, size=3)).astype(np.float32)
        alpha = (closed & (depth > 0)).astype(np.float32)
    else:
        raise StitchError(f"unknown renderer {renderer!r}; use auto, splat or points")
    covered, _ = coverage_masks(alpha, erode_px=erode_px, dilate_px=erode_px, threshold=threshold)
    covered &= depth > 0
    return PartialDepth(np.where(covered, depth, 0.0).astype(np.float32), covered, alpha, renderer)
