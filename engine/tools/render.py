"""`stitch render`: render a saved scene from a trajectory or a JSON camera path to PNG files."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.images import colorize_depth, save_png
from engine.trajectory import MODES, trajectory
from splat.errors import StitchError
from splat.formats.camera_path import load_camera_path


def render_scene_to_png(
    scene: Path,
    output: Path,
    camera: str,
    width: int,
    height: int,
    depth_png: bool = False,
    load_options: dict | None = None,  # splat.formats.io.load_scene options (the .spz frame: axes)
    device: str = "auto",  # auto: gsplat on CUDA when available, else the CPU rasterizer
) -> list[Path]:
    """Render `scene` from the cameras named by `camera` (a mode or a .json path) -> files written."""
    from engine.device import check_gsplat, place_gaussians, resolve_device

    dev = resolve_device(device)
    check_gsplat(dev)
    from splat.formats.io import load_scene
    from splat.render import render_camera

    if not (8 <= width <= 8192 and 8 <= height <= 8192):
        raise StitchError(f"render size {width}x{height} is out of range; use 8..8192 per side")
    if output.suffix.lower() != ".png":
        raise StitchError(f"--output must be a .png file, got {output.name}")
    if camera in MODES:
        cameras = trajectory(camera, width, height)
    elif camera.endswith(".json"):
        cameras = load_camera_path(Path(camera), width, height)
    else:
        raise StitchError(f"--camera {camera!r} is neither a mode ({', '.join(MODES)}) nor a .json path")
    gaussians = place_gaussians(load_scene(scene, **(load_options or {})), dev)
    output.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for i, cam in enumerate(cameras):
        target = output if len(cameras) == 1 else output.with_name(f"{output.stem}_{i:03d}.png")
        with torch.no_grad():
            out = render_camera(gaussians, cam)
        save_png(out.rgb[0].clamp(0, 1).cpu().numpy(), target)
        written.append(target)
        if depth_png:
            depth_target = target.with_name(target.stem + "_depth.png")
            save_png(colorize_depth(out.depth[0, ..., 0].cpu().numpy()), depth_target)
            written.append(depth_target)
    return written
