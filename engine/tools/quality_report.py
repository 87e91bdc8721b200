"""The refinement quality report: how well a scene reproduces its generation views, and novel cameras.

Two kinds of measurement, each PSNR (dB) and SSIM:

1. Generation views (trained on): the scene rendered from each generation camera against that view's
   image, over the view's trusted pixels (view 0: the whole photo; later views: the pixels they added,
   i.e. outpainted content; the rest of a later view is a render of the earlier scene, not a target).
2. Held-out jittered cameras (never trained on): each generation camera moved by a small random rotation
   and translation. There is no photo from such a camera, so the reference is built from the generation
   data alone, never from the scene: the view's trusted pixels are lifted with its completed depth and
   splatted into the jittered camera (bilinear, z-buffered). Pixels the reprojection does not reach, or
   where it sees through a crack to a farther surface, are left out. The reference is therefore the
   same before and after refinement, and a scene scores well only if it renders what the views and their
   depth say from cameras it was not fitted to: floaters, needles and smeared geometry cost PSNR here.
   (Rendering the jittered cameras from the scene before refinement and using that as the reference
   would only measure how little refinement changed the scene, so it is not done.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from splat.cameras import Camera, unproject_depth
from splat.gaussians import Gaussians
from splat.losses import psnr, ssim_map


@dataclass
class Reference:
    """An image to compare a render against, and the pixels that count."""

    name: str
    camera: Camera
    image: np.ndarray  # [H, W, 3] float32 in [0, 1]
    mask: np.ndarray  # [H, W] bool


def masked_ssim(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean SSIM (11 px Gaussian window) over the masked pixels of [H, W, 3] images."""
    s = ssim_map(pred.permute(2, 0, 1)[None], target.permute(2, 0, 1)[None])[0].mean(0)
    return float(s[mask].mean())


def jitter_camera(camera: Camera, rng: np.random.Generator, degrees: float, shift: float) -> Camera:
    """`camera` rotated by up to `degrees` about a random axis and moved by `shift` in a random direction."""
    from scipy.spatial.transform import Rotation

    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    rot = Rotation.from_rotvec(axis * np.deg2rad(degrees) * rng.uniform(0.5, 1.0)).as_matrix()
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    c2w = camera.camera_to_world.copy()
    c2w[:3, :3] = c2w[:3, :3] @ rot
    c2w[:3, 3] = c2w[:3, 3] + direction * shift
    return Camera(camera.width, camera.height, camera.K, np.linalg.inv(c2w))


def reproject(
    image: np.ndarray,  # [H, W, 3] source view
    depth: np.ndarray,  # [H, W] its z-depth
    mask: np.ndarray,  # [H, W] bool, source pixels to carry
    source: Camera,
    target: Camera,
    depth_tolerance: float = 0.02,
) -> tuple[np.ndarray, np.ndarray]:
    """Splat the masked source pixels into `target` -> (image [H', W', 3], valid [H', W'] bool).

    Each point spreads bilinearly over the four nearest target pixels; a pixel keeps only points within
    `depth_tolerance` (relative) of its nearest one; it is valid where the kept weight is >= 0.5 and no
    3x3 neighbour is nearer by more than the tolerance (a crack showing a farther surface)."""
    pts = unproject_depth(source, depth, mask)  # [M, 3]
    cols = image[mask].astype(np.float64)
    w2c = target.world_to_camera
    cam = pts @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    front = z > 1e-3
    cam, z, cols = cam[front], z[front], cols[front]
    uv = (cam @ target.K.T)[:, :2] / z[:, None] - 0.5  # pixel-centre coordinates
    H, W = target.height, target.width
    x0, y0 = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
    fx, fy = uv[:, 0] - x0, uv[:, 1] - y0
    corners = []
    for dx, dy, w in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        x, y = x0 + dx, y0 + dy
        ok = (x >= 0) & (x < W) & (y >= 0) & (y < H) & (w > 1e-3)
        corners.append((y[ok] * W + x[ok], w[ok], np.nonzero(ok)[0]))
    zbuf = np.full(H * W, np.inf)
    for flat, _, idx in corners:
        np.minimum.at(zbuf, flat, z[idx])
    acc = np.zeros((H * W, 3))
    wsum = np.zeros(H * W)
    for flat, w, idx in corners:
        near = z[idx] <= zbuf[flat] * (1 + depth_tolerance)
        np.add.at(acc, flat[near], cols[idx[near]] * w[near, None])
        np.add.at(wsum, flat[near], w[near])
    out = (acc / np.maximum(wsum, 1e-12)[:, None]).reshape(H, W, 3)
    zb = zbuf.reshape(H, W)
    padded = np.pad(zb, 1, constant_values=np.inf)
    neighbour_min = np.min([padded[i : i + H, j : j + W] for i in range(3) for j in range(3)], axis=0)
    crack = zb > neighbour_min * (1 + 4 * depth_tolerance)
    valid = (wsum.reshape(H, W) >= 0.5) & np.isfinite(zb) & ~crack
    return out.astype(np.float32), valid


def held_out_references(
    cameras: Sequence[Camera],
    images: Sequence[np.ndarray],
    depths: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    per_view: int = 2,
    degrees: float = 3.0,
    shift_fraction: float = 0.02,
    seed: int = 0,
) -> list[Reference]:
    """`per_view` jittered cameras per generation view, each with its reprojected reference."""
    rng = np.random.default_rng(seed)
    refs = []
    for k, (cam, img, depth, mask) in enumerate(zip(cameras, images, depths, masks, strict=True)):
        shift = shift_fraction * float(np.median(depth[mask])) if mask.any() else 0.0
        for j in range(per_view):
            jc = jitter_camera(cam, rng, degrees, shift)
            ref, valid = reproject(img, depth, mask, cam, jc)
            refs.append(Reference(f"view {k} jitter {j}", jc, ref, valid))
    return refs


@torch.no_grad()
def score(gaussians: Gaussians, refs: Sequence[Reference], background=None) -> list[dict]:
    """PSNR and SSIM of the scene's render against each reference over its mask."""
    from splat.render import render_camera

    rows = []
    for ref in refs:
        out = render_camera(gaussians, ref.camera, background=background)
        pred = out.rgb[0].clamp(0, 1).float().cpu()
        target = torch.from_numpy(ref.image).float()
        mask = torch.from_numpy(ref.mask)
        if not bool(mask.any()):
            rows.append({"name": ref.name, "psnr": None, "ssim": None, "pixels": 0})
            continue
        rows.append(
            {
                "name": ref.name,
                "psnr": round(psnr(pred, target, mask), 3),
                "ssim": round(masked_ssim(pred, target, mask), 4),
                "pixels": int(mask.sum()),
            }
        )
    return rows


def summary(rows: Sequence[dict]) -> dict:
    """Mean PSNR and SSIM over the rows that have pixels."""
    ok = [r for r in rows if r["psnr"] is not None]
    if not ok:
        return {"mean_psnr": None, "mean_ssim": None}
    return {
        "mean_psnr": round(float(np.mean([r["psnr"] for r in ok])), 3),
        "mean_ssim": round(float(np.mean([r["ssim"] for r in ok])), 4),
    }


def quality(gaussians: Gaussians, generation: Sequence[Reference], held_out: Sequence[Reference]) -> dict:
    """The report's block for one scene: per-reference rows and their means, both kinds."""
    gen_rows = score(gaussians, generation)
    held_rows = score(gaussians, held_out)
    return {
        "n_gaussians": len(gaussians),
        "generation_views": {"rows": gen_rows, **summary(gen_rows)},
        "held_out_cameras": {"rows": held_rows, **summary(held_rows)},
    }
