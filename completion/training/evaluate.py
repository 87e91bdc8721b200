"""Validation during training: the scene-geometry benchmark's metric on held-out RGB-D frames.

For pairs (i, j) of a held-out RGB-D sequence, frame i's ground truth is rendered into frame j
(engine.bench.partial_depth.render_partial_depth: Gaussians + the project's renderer); the model completes j
from its image and that partial depth; the score is the MAE in metres on the uncovered pixels with GT
(engine.bench.metrics.depth_metrics), averaged over pairs. Partial depths are computed once and reused.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from splat.errors import StitchError


@dataclass
class ValSample:
    name: str
    image: np.ndarray  # [H, W, 3] float32 in [0, 1]
    known_depth: np.ndarray  # [H, W] metres, 0 off covered
    covered: np.ndarray  # [H, W] bool
    gt: np.ndarray  # [H, W] metres, 0 = no ground truth


def rgbd_val_samples(
    root: str, max_pairs: int = 4, gap: int | None = None, renderer: str = "auto", seed: int = 0
) -> list[ValSample]:
    """Held-out benchmark pairs from an RGB-D folder (any layout engine.bench.rgbd reads)."""
    from engine.bench.pairs import default_gap, select_pairs
    from engine.bench.partial_depth import render_partial_depth
    from engine.bench.rgbd import load_rgbd_sequence

    seq = load_rgbd_sequence(root)
    g = gap if gap is not None else default_gap(seq)
    out = []
    for i, j in select_pairs(len(seq), g, max_pairs=max_pairs, seed=seed):
        src, dst = seq.load(i), seq.load(j)
        part = render_partial_depth(src, dst, renderer=renderer)
        out.append(ValSample(f"{src.name}->{dst.name}", dst.image, part.known_depth, part.covered, dst.depth))
    if not out:
        raise StitchError(f"no validation pairs in {root}")
    return out


@torch.no_grad()
def predict_depth(
    model, image: np.ndarray, known_depth: np.ndarray, known: np.ndarray, size: tuple[int, int] | None = None
) -> np.ndarray:
    """Run the model on one frame (optionally at `size` (H, W)), return depth [H, W] at the frame's size."""
    H, W = known_depth.shape
    if size is not None and tuple(size) != (H, W):
        h, w = size
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        known_depth = cv2.resize(np.where(known, known_depth, 0), (w, h), interpolation=cv2.INTER_NEAREST)
        known = known_depth > 0
    dev, dt = model.device, model.dtype
    rgb = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(dev, dt)[None]
    sparse = torch.from_numpy(np.where(known, known_depth, 0).astype(np.float32)).to(dev, dt)[None, None]
    mask = torch.from_numpy(known.astype(np.float32)).to(dev, dt)[None, None]
    pred = model(rgb, sparse, mask)
    if pred.shape[-2:] != (H, W):
        pred = F.interpolate(pred, size=(H, W), mode="bilinear", align_corners=False)
    return pred[0, 0].float().cpu().numpy()


def validate(model, samples: list[ValSample], config=None) -> dict[str, float]:
    """Mean over pairs of the benchmark scores (mae = the paper's metric, metres, uncovered pixels).

    The model runs through NetworkDepthCompleter (engine/backends), the object `stitch generate --depth
    PATH` and `stitch bench` build (reflect padding, flip averaging, depth scaling 0.5 for views with known
    depth), so the logged number is the number `bench` reports for the same weights."""
    from engine.backends.depth_network import NetworkDepthCompleter
    from engine.bench.metrics import depth_metrics

    was_training = model.training
    completer = NetworkDepthCompleter(model, config)  # puts the model in eval mode
    rows = []
    try:
        for s in samples:
            pred = completer(s.image, s.known_depth, s.covered)
            m = depth_metrics(pred, s.gt, s.covered)
            if m["n_pixels"] > 0:
                rows.append(m)
    finally:
        model.train(was_training)
    if not rows:
        return {"mae": float("nan"), "n_pairs": 0.0}
    keys = ("mae", "rmse", "absrel", "delta1")
    out = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
    out["n_pairs"] = float(len(rows))
    return out
