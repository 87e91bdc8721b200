"""Depth completion: full depth for a view, conditioned on the depth the scene already gives it.

`DepthCompleter` is the protocol the pipeline calls. Backends:
- engine/depth_classical.py: geometric completion of the known depth (offline default) and a documented scene
  prior when nothing is known (the first view);
- engine/depth_mono.py: a monocular depth model aligned to the known depth by robust scale & shift;
- engine/depth_network.py: the learned completion network (completion/model.py).
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
