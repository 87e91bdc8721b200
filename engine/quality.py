"""Scene quality checks: how well the Gaussians reproduce their generation views, and coverage in between."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

from splat.cameras import Camera
from splat.gaussians import Gaussians
from splat.losses import psnr


def interpolate_cameras(a: Camera, b: Camera, t: float) -> Camera:
    """Camera between a and b: centres lerped, rotations slerped (via scipy), intrinsics of a."""
    from scipy.spatial.transform import Rotation, Slerp

    ra, rb = a.camera_to_world[:3, :3], b.camera_to_world[:3, :3]
    rot = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([ra, rb])))([t]).as_matrix()[0]
    centre = (1 - t) * a.center + t * b.center
    w2c = np.eye(4)
    w2c[:3, :3] = rot.T
    w2c[:3, 3] = -rot.T @ centre
    return Camera(a.width, a.height, a.K, w2c)


@torch.no_grad()
def generation_view_psnr(gaussians: Gaussians, views: Sequence, alpha_threshold: float = 0.5) -> dict:
    """PSNR (dB) of the scene rendered from each generation camera against the view it was built from,
    over the pixels the render covers; plus the alpha coverage from cameras halfway between views."""
    from splat.render import render_camera

    per_view, coverage = [], []
    for v in views:
        out = render_camera(gaussians, v.camera)
        covered = out.alpha[0, ..., 0] > alpha_threshold
        target = torch.from_numpy(v.image).to(out.rgb.device)
        per_view.append(round(psnr(out.rgb[0].clamp(0, 1), target, covered), 2) if covered.any() else None)
    for a, b in itertools.pairwise(views):
        out = render_camera(gaussians, interpolate_cameras(a.camera, b.camera, 0.5))
        coverage.append(round(float((out.alpha[0, ..., 0] > alpha_threshold).float().mean()), 4))
    return {"psnr_generation_views": per_view, "alpha_coverage_between_views": coverage}


@torch.no_grad()
def render_preview(
    gaussians: Gaussians, cameras: Sequence[Camera], max_tiles: int = 6, tile_width: int = 384
) -> np.ndarray:
    """A strip of renders from up to `max_tiles` generation cameras -> float32 [H, W, 3]."""
    from splat.render import render_camera

    if len(cameras) > max_tiles:
        idx = np.linspace(0, len(cameras) - 1, max_tiles).round().astype(int)
        cameras = [cameras[i] for i in idx]
    tiles = []
    for cam in cameras:
        scale = min(1.0, tile_width / cam.width)
        c = cam.scaled(max(8, round(cam.width * scale)), max(8, round(cam.height * scale)))
        tiles.append(render_camera(gaussians, c).rgb[0].clamp(0, 1).cpu().numpy())
    h = min(t.shape[0] for t in tiles)
    gap = np.ones((h, 4, 3), np.float32)
    row = []
    for t in tiles:
        row += [t[:h], gap]
    return np.concatenate(row[:-1], axis=1).astype(np.float32)
