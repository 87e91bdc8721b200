"""Training masks: disocclusions from warped depth (the paper's signal) and random strokes (ablation).

Warped masks (`stitch train masks DEPTH_DIR OUT_DIR`): each depth map is lifted to 3D with the project's
pinhole convention (focal = width unless the depth's JSON gives `K`), one Gaussian per pixel
(`splat.gaussians.Gaussians.from_points`), and rendered with `splat.render.render_camera` from a camera that
orbits a pivot at the median depth (the release pivots 1 unit ahead and clips far depth first:
`--pivot 1 --snap-depth 15`): yaw, pitch ~ U[-15, 15] deg, distance scale ~ U[0.9, 1.1] (configurable;
the release used the same ranges with pytorch3d's look-at cameras). Pixels the render leaves uncovered
(alpha < 0.5) are the mask. `renderer="points"` uses a per-point z-buffer (splat.cameras.warp_depth) plus a
3x3 closing instead: much faster on CPU, slightly blockier holes.

Each item's random numbers come from (seed, file name), so the masks do not depend on how the work is sharded.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from completion.training.depth_io import finished_stems, is_done, read_depth, read_json, write_mask
from completion.training.teacher import shard_items
from splat.cameras import Camera, intrinsics, rotation_ypr, unproject_depth, warp_depth
from splat.errors import StitchError


@dataclass(frozen=True)
class WarpConfig:
    yaw_deg: float = 15.0  # yaw ~ U[-yaw, yaw]
    pitch_deg: float = 15.0  # pitch ~ U[-pitch, pitch]
    dist_min: float = 0.9  # distance-to-pivot scale ~ U[dist_min, dist_max]
    dist_max: float = 1.1
    renderer: str = "splat"  # "splat" (Gaussian renderer) | "points" (z-buffer + closing)
    max_side: int = 256  # render at most this large, then upsample the mask (nearest)
    alpha_threshold: float = 0.5  # render alpha below this = uncovered
    min_hole: float = 0.0  # redraw the camera (up to 8 times) while the hole fraction is below this
    footprint: float = 0.7  # splat renderer: Gaussian sigma = footprint * pixel size at the point's depth
    pivot: float | None = None  # orbit pivot depth (None: the map's median depth; the release: 1.0 unit)
    snap_depth: float | None = None  # clip depth to this before warping (our reading of the release's 15)


def item_rng(seed: int, stem: str) -> np.random.Generator:
    """Per-item generator: identical whatever the sharding."""
    return np.random.default_rng([int(seed), zlib.crc32(stem.encode())])


def orbit_camera(src: Camera, pivot_depth: float, yaw: float, pitch: float, dist_scale: float) -> Camera:
    """`src` orbited about the point `pivot_depth` in front of it: rotated (yaw, pitch), distance scaled."""
    c2w = src.camera_to_world
    pivot = c2w[:3, :3] @ np.array([0.0, 0.0, pivot_depth]) + c2w[:3, 3]
    # the orbit rotation expressed in world axes (about the source camera's own axes)
    R = c2w[:3, :3] @ rotation_ypr(yaw, pitch) @ c2w[:3, :3].T
    centre = pivot + dist_scale * (R @ (src.center - pivot))
    rot_c2w = R @ c2w[:3, :3]
    w2c = np.eye(4)
    w2c[:3, :3] = rot_c2w.T
    w2c[:3, 3] = -rot_c2w.T @ centre
    return Camera(src.width, src.height, src.K, w2c)


def sample_orbit(rng: np.random.Generator, cfg: WarpConfig) -> tuple[float, float, float]:
    yaw = float(rng.uniform(-cfg.yaw_deg, cfg.yaw_deg))
    pitch = float(rng.uniform(-cfg.pitch_deg, cfg.pitch_deg))
    dist = float(rng.uniform(cfg.dist_min, cfg.dist_max))
    return yaw, pitch, dist


def render_coverage(src: Camera, depth: np.ndarray, dst: Camera, cfg: WarpConfig) -> np.ndarray:
    """Which pixels of `dst` the lifted depth map covers -> [H, W] bool."""
    valid = depth > 0
    if cfg.renderer == "points":
        z = warp_depth(src, depth, dst, valid)
        cov = (z > 0).astype(np.uint8)
        return cv2.morphologyEx(cov, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)) > 0
    if cfg.renderer != "splat":
        raise StitchError(f"unknown mask renderer {cfg.renderer!r}; use splat or points")
    from splat.gaussians import Gaussians
    from splat.render import render_camera

    pts = unproject_depth(src, depth, valid)
    if len(pts) < 4:
        return np.zeros((dst.height, dst.width), bool)
    g = Gaussians.from_points(pts, np.full_like(pts, 0.5), sh_degree=0)
    # Size each Gaussian by its pixel's footprint (z / f), not by 3-D neighbours: an isolated point on a noisy
    # or thin structure would otherwise become a huge blob that covers the disocclusions we are looking for.
    sigma = depth[valid].astype(np.float64) / src.focal * cfg.footprint
    with torch.no_grad():
        g.params["scales"].copy_(
            torch.from_numpy(np.log(np.maximum(sigma, 1e-6))).float()[:, None].expand(-1, 3)
        )
    with torch.no_grad():
        out = render_camera(g, dst)
    return out.alpha[0, ..., 0].cpu().numpy() >= cfg.alpha_threshold


def warped_hole_mask(
    depth: np.ndarray, rng: np.random.Generator, cfg: WarpConfig = WarpConfig(), K: np.ndarray | None = None
) -> tuple[np.ndarray, dict]:
    """depth [H, W] (0 = invalid) -> hole [H, W] bool (True = uncovered after the warp), metadata."""
    if depth.ndim != 2 or not (depth > 0).any():
        raise StitchError("depth map for a warped mask must be [H, W] with some valid (> 0) pixels")
    H, W = depth.shape
    s = min(1.0, cfg.max_side / max(H, W))
    h, w = max(2, round(H * s)), max(2, round(W * s))
    small = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST) if (h, w) != (H, W) else depth
    Ks = intrinsics(w, h) if K is None else np.diag([w / W, h / H, 1.0]) @ np.asarray(K, np.float64)
    src = Camera(w, h, Ks, np.eye(4))
    if cfg.snap_depth is not None:  # far outliers (sky) would otherwise dominate the parallax
        small = np.where(small > 0, np.minimum(small, cfg.snap_depth), 0.0).astype(np.float32)
    pivot = float(np.median(small[small > 0])) if cfg.pivot is None else float(cfg.pivot)
    for _ in range(8):
        yaw, pitch, dist = sample_orbit(rng, cfg)
        dst = orbit_camera(src, pivot, yaw, pitch, dist)
        hole_small = ~render_coverage(src, small, dst, cfg)
        if hole_small.mean() >= cfg.min_hole:
            break
    hole = cv2.resize(hole_small.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST) > 0
    meta = {
        "type": "warped",
        "yaw": yaw,
        "pitch": pitch,
        "dist_scale": dist,
        "pivot_depth": pivot,
        **asdict(cfg),
    }
    return hole, meta


def stroke_mask(
    height: int, width: int, rng: np.random.Generator, max_strokes: int = 6, max_width_frac: float = 0.08
) -> np.ndarray:
    """Random thick polylines (free-form inpainting masks) -> hole [H, W] bool. For the paper's ablation."""
    m = np.zeros((height, width), np.uint8)
    diag = math.hypot(height, width)
    for _ in range(int(rng.integers(1, max_strokes + 1))):
        x, y = float(rng.uniform(0, width)), float(rng.uniform(0, height))
        thick = max(1, int(rng.uniform(0.02, max_width_frac) * diag))
        for _ in range(int(rng.integers(2, 8))):
            ang = rng.uniform(0, 2 * math.pi)
            length = rng.uniform(0.05, 0.25) * diag
            nx = float(np.clip(x + length * math.cos(ang), 0, width - 1))
            ny = float(np.clip(y + length * math.sin(ang), 0, height - 1))
            cv2.line(m, (int(x), int(y)), (int(nx), int(ny)), 255, thick)
            x, y = nx, ny
    return m > 0


@dataclass(frozen=True)
class MaskJob:
    """One shard of a mask run (picklable for submitit)."""

    depth_dir: str
    out_dir: str
    kind: str = "warped"  # "warped" | "strokes"
    shard: int = 0
    num_shards: int = 1
    seed: int = 0
    overwrite: bool = False
    warp: WarpConfig = WarpConfig()

    def __call__(self) -> dict:
        return run_masks(self)

    def checkpoint(self, *args, **kwargs):
        """submitit: on timeout / preemption requeue the same shard; finished masks are skipped."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def run_masks(job: MaskJob) -> dict:
    """Write a mask for every finished depth map of this shard that has none yet; returns counts."""
    if job.kind not in ("warped", "strokes"):
        raise StitchError(f"mask kind must be warped or strokes, got {job.kind!r}")
    stems = shard_items(finished_stems(Path(job.depth_dir)), job.shard, job.num_shards)
    out = Path(job.out_dir)
    todo = [s for s in stems if job.overwrite or not is_done(out, s)]
    stats = {"shard": job.shard, "total": len(stems), "skipped": len(stems) - len(todo), "written": 0}
    for stem in todo:
        rng = item_rng(job.seed, stem)
        if job.kind == "warped":
            depth, meta = read_depth(Path(job.depth_dir), stem)
            hole, mmeta = warped_hole_mask(depth, rng, job.warp, K=meta.get("K"))
        else:
            meta = read_json(Path(job.depth_dir) / f"{stem}.json")
            hole = stroke_mask(int(meta["height"]), int(meta["width"]), rng)
            mmeta = {"type": "strokes"}
        write_mask(out, stem, hole, {**mmeta, "seed": job.seed, "source": stem})
        stats["written"] += 1
    return stats
