"""Depth completion: full depth for a view, conditioned on the depth the scene already gives it.

`DepthCompleter` is the protocol the pipeline calls. Backends:
- depth_classical.py: geometric completion of the known depth (offline default), with depth_prior.py's
  documented scene prior when nothing is known (the first view);
- engine/backends/depth_mono.py: a monocular depth model aligned to the known depth by robust scale & shift;
- engine/backends/depth_network.py: the learned completion network (completion/network/model.py).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class DepthCompleter(Protocol):
    """image [H, W, 3] float32 in [0, 1], known_depth [H, W] float32 metres (0 where unknown),
    known_mask [H, W] bool -> depth [H, W] float32 metres, > 0 everywhere.

    With an all-False mask (the first view) it must still return a plausible depth map from the image."""

    name: str

    def describe(self) -> dict:
        """Backend name, model id and revision, settings: recorded in the run manifest."""
        ...

    def __call__(self, image: np.ndarray, known_depth: np.ndarray, known_mask: np.ndarray) -> np.ndarray: ...


def ray_lengths(K: np.ndarray, width: int, height: int) -> np.ndarray:  # -> [H, W] float32, >= 1
    """||K^-1 [u, v, 1]|| at each pixel centre: ray distance = z-depth x this."""
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    x = (u - K[0, 2]) / K[0, 0]
    y = (v - K[1, 2]) / K[1, 1]
    return np.sqrt(x * x + y * y + 1.0).astype(np.float32)


def complete_in_view(
    completer: DepthCompleter,
    image: np.ndarray,  # [H, W, 3]
    known_depth: np.ndarray,  # [H, W] z-depth metres, 0 where unknown
    known_mask: np.ndarray,  # [H, W] bool
    K: np.ndarray,  # [3, 3] the view's intrinsics
) -> np.ndarray:  # [H, W] z-depth metres
    """Call the completer; a completer with `fills_ray_distance` gets distances along the rays instead of z.

    Why: a propagation method continues the known values outwards. Continued in z, the new surface is a
    plane facing the camera; each turn of a 360 chain then sees the last plane's far edge deeper than the
    plane itself and the scene swells view after view (median depth x2.3 over 13 views). Continued in ray
    distance, the surface is a sphere about the camera centre, which a turning camera sees unchanged."""
    if not getattr(completer, "fills_ray_distance", False):
        return completer(image, known_depth, known_mask)
    h, w = known_mask.shape
    rays = ray_lengths(K, w, h)
    distance = completer(image, (known_depth * rays).astype(np.float32), known_mask)
    return (np.asarray(distance, np.float32) / rays).astype(np.float32)
