"""Stitch added cameras into a finished run, one pipeline step each (`stitch extend`, the viewer's button)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.events import EventCallback
from engine.extend.guard import CameraCheck, GuardRails, check_camera
from engine.extend.state import CAMERA_PATH, RunState, cameras_from_options, read_run, scene_path
from engine.extend.undo import run_lock, snapshot, undo_last
from engine.pipeline import PipelineOutput, StitchPipeline
from engine.rundir import atomic_write_bytes
from splat.cameras import Camera
from splat.errors import StitchError
from splat.formats.camera_path import cameras_to_json


@dataclass
class ExtendResult:
    run_dir: Path
    added: list[int] = field(default_factory=list)  # view indices stitched by this call
    n_before: int = 0
    n_after: int = 0
    scene: Path | None = None
    output: PipelineOutput | None = None


def load_backends(state: RunState, quiet: bool = True):
    """The run's outpainter and depth completer (the viewer keeps them between presses)."""
    from engine.backends.loading import backends_for_config

    return backends_for_config(state.config, quiet=quiet)


def extend_run(
    root: str | Path,
    cameras: Sequence[Camera] = (),
    *,
    prompt: str | None = None,
    callbacks: Sequence[EventCallback] = (),
    backends=None,
    rails: GuardRails | None = None,
    on_checked: Callable[[int, CameraCheck], None] | None = None,
) -> ExtendResult:
    """Stitch `cameras` into the finished run at `root`, one view at a time; each is guard-checked first.

    With no cameras an interrupted extension is finished. prompt: the outpainter's prompt for these views
    (default: the run's). A refused camera raises ViewRefusedError after the views before it were added.
    """
    with run_lock(Path(root)):
        state = read_run(root)
        pending = _pending(state)
        # Killed mid-view, or after the view's checkpoint but before the scene file was rewritten.
        unfinished = bool(pending) or state.manifest.get("status") == "extending"
        if unfinished and cameras:
            raise StitchError(
                f"{state.rd.root} has an unfinished added view; finish it with "
                f"stitch extend {state.rd.root} (or drop them with --undo) first"
            )
        if not unfinished and not cameras:
            raise StitchError("no cameras to add; give --path FILE.json or --yaw/--pitch/--move")
        if prompt is not None and len(prompt) > 10_000:
            raise StitchError("prompt is longer than 10000 characters; shorten it")
        outpainter, completer = backends if backends is not None else load_backends(state)
        needs = getattr(outpainter, "needs_prompt", False)
        if cameras and needs and not (state.config.prompt if prompt is None else prompt):
            raise StitchError(f"the {outpainter.name} outpainter needs a prompt; pass --prompt TEXT")
        result = ExtendResult(state.rd.root)
        _, tensors, _ = state.rd.load_checkpoint()
        result.n_before = 0 if tensors is None else len(tensors["means"])
        if unfinished:  # a killed extension: stitch what the manifest already names, with its prompt
            last = state.extensions[-1] if state.extensions else {}
            result.output = _stitch(state, outpainter, completer, last.get("prompt", ""), callbacks)
            result.added += [e["view"] for e in pending]
        for camera in cameras:
            check = check_camera(state, camera, rails)
            k = len(state.cameras)
            if on_checked is not None:
                on_checked(k, check)
            view_prompt = state.config.prompt if prompt is None else prompt
            snapshot(state, k)
            state.cameras.append(camera)
            state.rd.n_views = len(state.cameras)
            state.manifest["cameras"] = [c.to_dict() for c in state.cameras]
            state.manifest.setdefault("extensions", []).append(
                {
                    "view": k,
                    "prompt": view_prompt,
                    "seed": state.config.seed + k,  # what the outpainter gets, as for a planned view
                    "camera": camera.to_dict(),
                    "added": time.strftime("%Y-%m-%dT%H:%M:%S"),
                }
            )
            state.manifest["status"] = "extending"
            state.rd.write_manifest(state.manifest)
            result.output = _stitch(state, outpainter, completer, view_prompt, callbacks)
            result.added.append(k)
        result.n_after = len(result.output.gaussians) if result.output is not None else result.n_before
        result.scene = scene_path(state)
        return result


def _pending(state: RunState) -> list[dict]:
    """Added views the checkpoint does not hold yet (a killed extension)."""
    views_done, _, _ = state.rd.load_checkpoint()
    return [e for e in state.extensions if e["view"] >= views_done]


def _stitch(state: RunState, outpainter, completer, prompt: str, callbacks) -> PipelineOutput:
    """Continue the run over all its cameras, as `generate --resume` does, then finish it again."""
    from engine.run import _finish

    config = state.config
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % (2**32))
    pipeline = StitchPipeline(outpainter, completer, config.fusion, config.optim, config.sh_degree)
    t0 = time.perf_counter()
    result = pipeline(
        state.image,
        state.cameras,
        prompt=prompt,
        seed=config.seed,
        run_dir=state.rd,
        callbacks=callbacks,
        resume=True,
    )
    exports = state.manifest.get("exports", {})
    output = scene_path(state)
    _finish(
        state.rd,
        state.manifest,
        result,
        output,
        "splat" in exports,
        "spz" in exports,
        time.perf_counter() - t0,
    )
    _write_camera_path(state)
    return result


def _write_camera_path(state: RunState) -> None:
    """All cameras with their prompt and seed: `generate --path` over it replays the run."""
    data = cameras_to_json(state.cameras)
    prompts = {e["view"]: e for e in state.extensions}
    for k, entry in enumerate(data["cameras"]):
        ext = prompts.get(k)
        entry["prompt"] = ext["prompt"] if ext else state.config.prompt
        entry["seed"] = state.config.seed + k
    atomic_write_bytes(state.rd.root / CAMERA_PATH, json.dumps(data, indent=2).encode("utf-8"))


def parse_move(text: str | None) -> tuple[float, float, float] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(np.isfinite(values)):
        raise StitchError(f"--move must be three numbers X,Y,Z in metres, got {text!r}")
    return values  # type: ignore[return-value]


def run_extend_cli(
    root: Path,
    path: Path | None,
    yaw: float | None,
    pitch: float | None,
    move: str | None,
    prompt: str | None,
    undo: bool,
    quiet: bool,
) -> list[str]:
    """`stitch extend`: the lines to print on stdout (progress goes to stderr)."""
    if undo:
        if path is not None or yaw is not None or pitch is not None or move is not None:
            raise StitchError("--undo takes no cameras; run it alone")
        k = undo_last(root)  # 0-based index; people count views from 1, as the progress lines do
        return [f"removed view {k + 1}; {root} is back to {k} views"]
    state = read_run(root)
    cameras = cameras_from_options(state, path, yaw, pitch, parse_move(move))
    callbacks = []
    if not quiet:
        from engine.run import ProgressPrinter

        printer = ProgressPrinter()
        # Each added view is a resumed run of the pipeline; its "resuming after N views" line is noise here.
        callbacks.append(lambda event: None if event.kind == "run_started" else printer(event))
    result = extend_run(root, cameras, prompt=prompt, callbacks=callbacks)
    views = ", ".join(f"{k + 1} (views/view_{k:03d}.png)" for k in result.added)
    return [
        f"{result.scene}",
        f"added view {views}: {result.n_before:,} -> {result.n_after:,} Gaussians; "
        f"undo with: stitch extend {root} --undo",
    ]
