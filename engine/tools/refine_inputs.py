"""What `stitch refine` trains on: a finished run's cameras, views, depths, trusted pixels and Gaussians."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.rundir import RunDirectory
from engine.tools.quality_report import Reference, held_out_references
from splat.cameras import Camera
from splat.errors import StitchError
from splat.train_views import TrainView


@dataclass
class RunData:
    """What a finished run holds for refinement (all on the CPU; numpy per view)."""

    cameras: list[Camera]
    images: list[np.ndarray]  # [H, W, 3] float32
    depths: list[np.ndarray]  # [H, W] float32
    trusted: list[np.ndarray]  # [H, W] bool
    gaussians: dict[str, torch.Tensor]  # checkpoint tensors of the finished scene


def load_run(root: Path, trust: str = "new") -> RunData:
    """Cameras, views, depths and trusted-pixel masks of a finished run, and its final Gaussians."""
    rd = RunDirectory(Path(root))
    manifest = rd.read_manifest()
    cameras = rd.read_cameras(manifest)  # validated in one place (engine/rundir.py)
    if not cameras:
        raise StitchError(f"{rd.manifest_path} lists no cameras; it is not a finished stitch run")
    views_done, tensors, _ = rd.load_checkpoint()
    if tensors is None or views_done < len(cameras):
        raise StitchError(
            f"{rd.root} holds {views_done} of {len(cameras)} views; finish it first: "
            f"stitch generate --resume {rd.root}"
        )
    images, depths, trusted = [], [], []
    for k in range(len(cameras)):
        image, depth, new = rd.load_view(k)
        if image.shape[:2] != (cameras[k].height, cameras[k].width):
            raise StitchError(f"view {k} in {rd.root} does not match its camera's size; start a new run")
        images.append(image)
        depths.append(depth.astype(np.float32))
        trusted.append(np.ones(new.shape, bool) if (trust == "all" or k == 0) else new)
    return RunData(cameras, images, depths, trusted, tensors)


def train_views(run: RunData, device: torch.device) -> list[TrainView]:
    return [
        TrainView(
            cam,
            torch.from_numpy(img).to(device),
            torch.from_numpy(mask).to(device),
            torch.from_numpy(depth).to(device),
        )
        for cam, img, depth, mask in zip(run.cameras, run.images, run.depths, run.trusted, strict=True)
    ]


def references(run: RunData, seed: int = 0) -> tuple[list[Reference], list[Reference]]:
    """(generation-view references, held-out jittered-camera references) of a run."""
    generation = [
        Reference(f"view {k}", cam, img, mask)
        for k, (cam, img, mask) in enumerate(zip(run.cameras, run.images, run.trusted, strict=True))
    ]
    held = held_out_references(run.cameras, run.images, run.depths, run.trusted, seed=seed)
    return generation, held
