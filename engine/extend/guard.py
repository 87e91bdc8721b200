"""Guard rails: a camera seeing nothing new, facing away, inside the geometry or over budget is refused."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.extend.state import RunState
from engine.fusion import coverage_masks
from splat.cameras import Camera, project_points
from splat.errors import StitchError


class ViewRefusedError(StitchError):
    """A camera the guard rails turn down (sees nothing new, faces away, inside the geometry, no budget)."""


@dataclass(frozen=True)
class GuardRails:
    min_overlap: float = 0.05  # the scene must cover this much of the view: depth is continued, not guessed
    min_new: float = 0.01  # and this much must be new, or the view would add (next to) nothing
    behind_surface: float = 1.05  # centre farther than this x a view's depth there: behind that surface


@dataclass
class CameraCheck:
    covered: float  # fraction of the view the existing scene covers (the pipeline's eroded mask)
    new: float  # fraction that would seed new Gaussians


def check_camera(state: RunState, camera: Camera, rails: GuardRails | None = None) -> CameraCheck:
    """Refuse (ViewRefusedError, one line) a camera the pipeline cannot stitch usefully; else what it sees."""
    from splat.gaussians import Gaussians
    from splat.render import render_camera

    rails = rails or GuardRails()
    w, h = state.size
    if (camera.width, camera.height) != (w, h):
        raise StitchError(f"the camera is {camera.width}x{camera.height} but the run's views are {w}x{h}")
    views_done, tensors, _ = state.rd.load_checkpoint()
    if tensors is None:
        raise StitchError(f"{state.rd.root} has no checkpoint; it cannot be extended")
    n = len(tensors["means"])
    budget = state.config.fusion.max_gaussians
    if budget > 0 and n >= budget:
        raise ViewRefusedError(
            f"the scene is at its Gaussian budget ({n:,} of {budget:,}); no view can be added to this run"
        )
    _check_not_inside(state, camera, views_done, rails)
    fusion = state.config.fusion
    gaussians = Gaussians(dict(tensors))
    with torch.no_grad():
        out = render_camera(gaussians, camera, background=torch.zeros(3))
    alpha = out.alpha[0, ..., 0].numpy()
    depth = out.depth[0, ..., 0].numpy()
    # The very masks the pipeline's step 2 makes: what it would keep, and what it would seed.
    covered, _ = coverage_masks(alpha, fusion.erode_px, fusion.dilate_px, fusion.coverage_threshold)
    covered &= depth > 0
    check = CameraCheck(float(covered.mean()), float((~covered).mean()))
    if check.covered < rails.min_overlap:
        raise ViewRefusedError(
            f"the camera faces away from the scene (it sees {check.covered:.0%} of it, "
            f"{rails.min_overlap:.0%} is needed to continue its geometry); turn towards the existing scene"
        )
    if check.new < rails.min_new:
        raise ViewRefusedError(
            f"this view sees nothing new ({1 - check.new:.1%} of it is already in the scene); "
            "turn or move further out before stitching"
        )
    return check


def _check_not_inside(state: RunState, camera: Camera, views_done: int, rails: GuardRails) -> None:
    """A camera behind a surface an earlier view saw is inside the geometry: project its centre into each
    view and compare its depth there with what that view saw."""
    centre = camera.center[None]
    for k in range(min(views_done, len(state.cameras))):
        cam_k = state.cameras[k]
        uv, z = project_points(cam_k, centre)
        u, v, z = float(uv[0, 0]), float(uv[0, 1]), float(z[0])
        if z <= 1e-6 or not (0 <= u < cam_k.width and 0 <= v < cam_k.height):
            continue
        path = state.rd.view_path("depth", k, ".npy")
        if not path.is_file():
            continue
        seen = float(np.load(path, allow_pickle=False)[int(v), int(u)])
        if seen > 0 and z > seen * rails.behind_surface:
            raise ViewRefusedError(
                f"the camera is inside the scene's geometry ({z:.2f} m deep where view {k} sees a surface at "
                f"{seen:.2f} m); move it back towards the generation cameras"
            )
