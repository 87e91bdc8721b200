"""`stitch generate` as a library call: run directory, backends, progress, viewer, manifest and exports."""

from __future__ import annotations

import contextlib
import platform
import sys
import time
import uuid
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from engine.backends.loading import backends_for_config
from engine.config import GenerateConfig
from engine.events import PipelineEvent
from engine.images import file_sha256, load_photo, save_png
from engine.interrupts import interrupts_that_stick, wait_for_interrupt
from engine.pipeline import PipelineOutput, StitchPipeline
from engine.resume_check import refuse_changed_settings
from engine.rundir import RunDirectory, atomic_write_json
from engine.trajectory import trajectory
from splat.cameras import Camera
from splat.errors import StitchError
from splat.formats.camera_path import load_camera_path

PACKAGES = (
    "torch",
    "gsplat",
    "numpy",
    "scipy",
    "opencv-python-headless",
    "diffusers",
    "transformers",
    "viser",
)


class LiveView(Protocol):
    """What `generate --view` needs of a live viewer (viewer/server.py's LiveViewer is one)."""

    url: str
    stitch_here: Any

    def callback(self, event: PipelineEvent) -> None: ...

    def stop(self) -> None: ...


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cameras_for(config: GenerateConfig, width: int, height: int) -> list[Camera]:
    if config.path is not None:
        return load_camera_path(config.path, width, height)
    return trajectory(config.mode, width, height)


class ProgressPrinter:
    """Progress on stderr: one line per view, an updating line for optimisation steps."""

    def __init__(self, stream=sys.stderr) -> None:
        self.stream = stream
        self.t0 = time.perf_counter()
        self.tty = stream.isatty()

    def __call__(self, event: PipelineEvent) -> None:
        elapsed = time.perf_counter() - self.t0
        k, n = event.view_index + 1, event.total_views
        if event.kind == "optimize_step":
            if self.tty or event.step == event.total_steps:
                end = "\n" if event.step == event.total_steps else "\r"
                print(
                    f"  view {k}/{n} optimise {event.step}/{event.total_steps} loss {event.loss:.4f}",
                    end=end,
                    file=self.stream,
                    flush=True,
                )
        elif event.kind == "view_started":
            print(f"[{elapsed:6.1f}s] view {k}/{n}: stitching", file=self.stream, flush=True)
        elif event.kind == "view_finished":
            print(f"[{elapsed:6.1f}s] view {k}/{n}: done ({event.message})", file=self.stream, flush=True)
        elif event.kind == "run_started" and event.view_index >= 0:
            print(f"resuming after {event.view_index + 1} finished views", file=self.stream, flush=True)


def _resolve_dirs(output: Path | None, run_dir: Path | None, resume: Path | None) -> tuple[Path, Path]:
    if resume is not None:
        return resume, (output or resume / "scene.ply")
    if run_dir is None:
        run_dir = output.parent if output is not None else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    return run_dir, (output or run_dir / "scene.ply")


def run_generate(
    config: GenerateConfig,
    *,
    output: Path | None = None,
    run_dir: Path | None = None,
    resume: Path | None = None,
    export_splat: bool = False,
    export_spz: bool = False,
    live_viewer: Callable[[Path], LiveView] | None = None,
    quiet: bool = False,
    extra_callbacks=(),
    explicit: frozenset[str] = frozenset(),
    device: str = "auto",
    cpu_offload: bool = False,
    attention_slicing: bool = False,
) -> PipelineOutput:
    """Generate a scene into a run directory; returns the pipeline output. Raises StitchError on bad input.

    device: "auto" (CUDA when available) | "cpu" | "cuda[:N]": where the Gaussians live (gsplat on CUDA)
    and the learned models run. cpu_offload / attention_slicing: lower GPU memory for the diffusion model.
    live_viewer: called with the run folder once it exists (`viewer.live_viewer_at(host, port)` for
    `--view`); the loop shows its events there and hands it the loaded models for Stitch here."""
    from engine.device import check_gsplat, describe_device, resolve_device

    dev = resolve_device(device)
    check_gsplat(dev, quiet=quiet)
    root, output = _resolve_dirs(output, run_dir, resume)
    if output.suffix.lower() != ".ply":
        raise StitchError(
            f"--output must end in .ply, got {output.name}; use --splat/--spz for other formats"
        )
    rd = RunDirectory(root)
    first_view = None  # text-only start: the plan of the text-to-image first view
    if resume is not None:
        manifest = rd.read_manifest()
        if manifest.get("extensions"):  # its cameras are more than its config names; extend knows them
            raise StitchError(
                f"{rd.root} was grown by stitch extend; continue it with stitch extend {rd.root}"
            )
        asked = config
        config = rd.read_config(manifest)  # every field type- and range-checked
        refuse_changed_settings(asked, config, manifest, explicit)
        rd.read_cameras(manifest)  # validated; a checkpoint cannot claim more views than these
        image = load_photo(rd.root / "input.png", max(config.max_side, 8))
        if file_sha256(rd.root / "input.png") != manifest.get("input_png_sha256"):
            raise StitchError(f"{rd.root / 'input.png'} changed since the run started; start a new run")
    else:
        if config.photo is None:  # text-only start: weights located now, the image painted after the checks
            from engine.backends.text_to_image import plan_text_to_image

            if not config.prompt.strip():
                raise StitchError(
                    "give a photo to generate from, a --prompt to paint one, or --resume RUN_DIR"
                )
            first_view = plan_text_to_image(
                config.text_to_image,
                model_path=config.model_path,
                steps=config.text_to_image_steps,
                max_side=config.max_side,
            )
            image = np.zeros((first_view.size[1], first_view.size[0], 3), np.float32)
        else:
            image = load_photo(config.photo, config.max_side)
        manifest = None
    if isinstance(config.seed, bool) or not isinstance(config.seed, int) or not 0 <= config.seed < 2**32:
        raise StitchError(f"--seed must be an integer in 0..{2**32 - 1}, got {config.seed}")
    h, w = image.shape[:2]
    cameras = cameras_for(config, w, h)
    first_depth = None
    if config.depth_file is not None:
        from engine.backends.depth_file import load_depth_file

        first_depth = load_depth_file(config.depth_file, (h, w))
    # Build the models before creating anything on disk: a missing model fails fast, nothing half-written.
    op_options = {"cpu_offload": cpu_offload, "attention_slicing": attention_slicing}
    outpainter, completer = backends_for_config(
        config, quiet=quiet, device=dev, outpainter_options=op_options
    )
    if len(cameras) > 1 and not config.prompt and getattr(outpainter, "needs_prompt", False):
        raise StitchError(f"the {outpainter.name} outpainter needs a prompt; pass --prompt TEXT")
    if first_view is not None:
        from engine.backends.text_to_image import generate_first_view

        image = generate_first_view(first_view, config.prompt, config.seed, quiet=quiet)
    if resume is None:
        # Never over the photo (d/input.png) or files no stitch run wrote; forget an older run's checkpoint.
        exports = [output.with_suffix(s) for s, on in ((".splat", export_splat), (".spz", export_spz)) if on]
        rd.claim([config.photo, config.depth_file, config.path], [output, *exports], image=image)
        rd.run_id = uuid.uuid4().hex
    rd.create()
    if resume is not None:
        rd.remove_stale_temp_files()  # what a killed process was writing; never a finished file
    if manifest is None:
        with _nothing_to_resume_yet(rd):
            save_png(image, rd.root / "input.png")
        manifest = {
            "stitch_version": _own_version(),
            "run_id": rd.run_id,
            "input": str(config.photo) if first_view is None else "text-to-image",
            "input_sha256": file_sha256(config.photo or rd.root / "input.png"),
            **({"first_view": {**first_view.describe(), "image": "input.png"}} if first_view else {}),
            "input_png_sha256": file_sha256(rd.root / "input.png"),
            "prompt": config.prompt,
            "seed": config.seed,
            "mode": "path" if config.path else config.mode,
            "image_size": [w, h],
            "config": config.to_dict(),
            "cameras": [c.to_dict() for c in cameras],
            "backends": {"outpainter": outpainter.describe(), "depth": completer.describe()},
            "first_view_depth": "file" if first_depth is not None else completer.describe().get("backend"),
            **describe_device(dev),
            "packages": package_versions(),
            "status": "running",
        }
        with _nothing_to_resume_yet(rd):
            rd.write_manifest(manifest)

    callbacks = list(extra_callbacks)
    if not quiet:
        callbacks.append(ProgressPrinter())
    viewer = None
    if live_viewer is not None:
        viewer = live_viewer(rd.root)
        viewer.stitch_here.use_backends(outpainter, completer)  # Stitch here: no second copy of the models
        callbacks.append(viewer.callback)
        print(f"viewer: {viewer.url}", file=sys.stderr)

    torch.manual_seed(config.seed)
    np.random.seed(config.seed % (2**32))
    if resume is not None:  # a resumed run may continue on another device: record each session's
        manifest.setdefault("resumed_on", []).append(describe_device(dev))
    pipeline = StitchPipeline(
        outpainter, completer, config.fusion, config.optim, config.sh_degree, device=dev
    )
    t0 = time.perf_counter()
    try:
        with interrupts_that_stick() as check_interrupt:
            result = pipeline(
                image,
                cameras,
                prompt=config.prompt,
                seed=config.seed,
                first_depth=first_depth,
                run_dir=rd,
                callbacks=[check_interrupt, *callbacks],
                resume=resume is not None,
            )
        wall = time.perf_counter() - t0
        try:
            _finish(rd, manifest, result, output, export_splat, export_spz, wall)
        except StitchError as exc:
            if not isinstance(exc.__cause__, OSError):
                raise
            # The scene file could not be written (disk full): every view is checkpointed.
            raise StitchError(f"{exc}; free space, then --resume {rd.root}") from exc
        if not quiet:
            print(f"scene: {output} ({len(result.gaussians)} Gaussians, {wall:.1f}s)", file=sys.stderr)
            verdict = rd.read_manifest().get("outcome", {}).get("verdict", "not measured")
            print(f"outcome: {verdict} (table: stitch check {rd.root})", file=sys.stderr)
        if viewer is not None and not quiet:
            print("viewer still running; press Ctrl-C to close it", file=sys.stderr)
            wait_for_interrupt()
    finally:
        if viewer is not None:
            viewer.stop()
    return result


@contextlib.contextmanager
def _nothing_to_resume_yet(rd: RunDirectory):
    """A write failing before the manifest exists (disk full) leaves nothing --resume could continue."""
    try:
        yield
    except OSError as exc:
        raise StitchError(
            f"cannot start the run in {rd.root} ({exc.strerror or exc}); free space, then run the same "
            "command again"
        ) from exc


def _finish(
    rd: RunDirectory,
    manifest: dict,
    result: PipelineOutput,
    output: Path,
    splat: bool,
    spz: bool,
    wall: float,
):
    from engine.outcome import evaluate_views
    from engine.quality import generation_view_psnr, render_preview
    from splat.formats.io import save_ply, save_scene

    output.parent.mkdir(parents=True, exist_ok=True)
    save_ply(result.gaussians, output)
    exports = {"ply": str(output)}
    if splat:
        save_scene(result.gaussians, output.with_suffix(".splat"))
        exports["splat"] = str(output.with_suffix(".splat"))
    if spz:
        save_scene(result.gaussians, output.with_suffix(".spz"))
        exports["spz"] = str(output.with_suffix(".spz"))
    preview = render_preview(result.gaussians, [v.camera for v in result.views])
    save_png(preview, rd.root / "preview.png")
    timings = result.timings
    manifest.update(
        {
            "status": "finished",
            "n_gaussians": len(result.gaussians),
            "timings": timings,
            "wall_seconds_last_session": round(wall, 2),
            "exports": exports,
            "preview": "preview.png",
            "quality": generation_view_psnr(result.gaussians, result.views),
            # What a person would notice (brightness, seams, repetition, holes, depth): engine/outcome.py.
            "outcome": evaluate_views(result.views, result.gaussians),
        }
    )
    atomic_write_json(rd.manifest_path, manifest)


def _own_version() -> str:
    try:
        return metadata.version("stitch")
    except metadata.PackageNotFoundError:
        return "dev"
