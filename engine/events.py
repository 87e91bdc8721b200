"""Events the pipeline emits while a scene grows; viewers, progress bars and loggers subscribe to them.

Subscribers are plain callables `(PipelineEvent) -> None`. The pipeline never waits on them for long and never
fails because one raised: a subscriber that needs slow work (a browser, a socket) must hand the event to
its own thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from torch import Tensor

from splat.cameras import Camera

EVENT_KINDS = ("run_started", "view_started", "view_added", "optimize_step", "view_finished", "run_finished")


@dataclass
class PipelineEvent:
    kind: str  # one of EVENT_KINDS
    view_index: int  # 0-based index of the view being worked on (-1 before the first)
    total_views: int
    cameras: list[Camera] = field(default_factory=list)  # all cameras of the run
    image: np.ndarray | None = None  # [H, W, 3] uint8, the finished view (view_added / view_finished)
    # Detached CPU snapshot in Gaussians' keys (view_finished, run_finished).
    gaussians: dict[str, Tensor] | None = None
    step: int = 0  # optimisation step within the view (optimize_step)
    total_steps: int = 0
    loss: float | None = None
    message: str = ""


EventCallback = Callable[[PipelineEvent], None]
