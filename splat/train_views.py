"""Posed training views (image, trusted pixels, depth) and their resizing to a training resolution."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from splat.cameras import Camera


@dataclass
class TrainView:
    camera: Camera
    image: Tensor  # [H, W, 3] float in [0, 1]
    mask: Tensor | None = None  # [H, W] bool, pixels the loss may trust (None: all)
    depth: Tensor | None = None  # [H, W] float metres, for depth supervision (None: none)


def scaled_view(view: TrainView, scale: float) -> TrainView:
    """The view at `scale` times its resolution (area-averaged image and mask, nearest depth)."""
    if scale == 1.0:
        return view
    cam = view.camera
    w, h = max(8, round(cam.width * scale)), max(8, round(cam.height * scale))
    img = F.interpolate(view.image.permute(2, 0, 1)[None], size=(h, w), mode="area")[0].permute(1, 2, 0)
    mask = None
    if view.mask is not None:
        mask = F.interpolate(view.mask[None, None].float(), size=(h, w), mode="area")[0, 0] > 0.999
    depth = None
    if view.depth is not None:  # nearest: averaging across an edge would invent depths between surfaces
        depth = F.interpolate(view.depth[None, None].float(), size=(h, w), mode="nearest-exact")[0, 0]
    return TrainView(cam.scaled(w, h), img, mask, depth)
