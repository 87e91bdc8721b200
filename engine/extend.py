"""Grow a finished run by more views (`stitch extend`, the viewer's "Stitch here") and take them back (Undo).

One added view is exactly one more step of the pipeline that built the run: the camera is appended to the
manifest and the pipeline continues as a resumed `generate` would (render, outpaint the holes, complete the
depth conditioned on the rendered depth, seed Gaussians, optimise). Its seed is the run's (view k uses
seed + k, as every planned view does), so a run grown view by view equals a `generate` over all its
cameras (RUN/camera_path.json), and `stitch extend` and the viewer give the same scene for the same camera.

Each view is checked first (guard rails), then the files it will replace are copied to RUN/undo/XXX/, then
it is stitched and the run is finished again (scene, preview, manifest). Undo copies them back: the scene,
checkpoint and manifest are byte-for-byte what they were. A process killed mid-view leaves the camera in
the manifest ("status": "extending"); `stitch extend RUN` finishes it, `stitch extend RUN --undo` drops it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.config import GenerateConfig
from engine.events import EventCallback
from engine.fusion import coverage_masks
from engine.images import file_sha256, load_photo
from engine.pipeline import PipelineOutput, StitchPipeline
from engine.rundir import RunDirectory, atomic_write_bytes
from splat.cameras import Camera, project_points
from splat.errors import StitchError
from splat.formats.camera_path import camera_from_entry, cameras_to_json, load_camera_path

UNDO_DIR = "undo"
LOCK_NAME = ".extend.lock"
CAMERA_PATH = "camera_path.json"


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


@dataclass
class ExtendResult:
    run_dir: Path
    added: list[int] = field(default_factory=list)  # view indices stitched by this call
    n_before: int = 0
    n_after: int = 0
    scene: Path | None = None
    output: PipelineOutput | None = None


@dataclass
class RunState:
    """A finished (or being-extended) run as extend needs it."""

    rd: RunDirectory
    manifest: dict
    config: GenerateConfig
    image: np.ndarray  # [H, W, 3] float32, the photo as the run was built from it
    cameras: list[Camera]

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]

    @property
    def extensions(self) -> list[dict]:
        return list(self.manifest.get("extensions", []))


def read_run(root: str | Path) -> RunState:
    """The run's manifest, config, photo and cameras; a run that is still generating is refused."""
    rd = RunDirectory(Path(root))
    if not rd.root.is_dir():
        raise StitchError(f"{rd.root} is not a directory; give the run directory of stitch generate")
    manifest = rd.read_manifest()
    status = manifest.get("status")
    if status not in ("finished", "extending"):
        raise StitchError(
            f"{rd.root} is not finished yet (status {status!r}); wait for it, or continue it with "
            f"stitch generate --resume {rd.root}"
        )
    config = rd.read_config(manifest)  # type- and range-checked, as --resume reads it
    cameras = rd.read_cameras(manifest)  # also tells the checkpoint loader how many views there can be
    if file_sha256(rd.root / "input.png") != manifest.get("input_png_sha256"):
        raise StitchError(f"{rd.root / 'input.png'} changed since the run started; start a new run")
    image = load_photo(rd.root / "input.png", max(config.max_side, 8))
    return RunState(rd, manifest, config, image, cameras)


def cameras_from_options(
    state: RunState,
    path: Path | None = None,
    yaw: float | None = None,
    pitch: float | None = None,
    move: Sequence[float] | None = None,
) -> list[Camera]:
    """--path FILE.json, or one camera from --yaw/--pitch/--move (degrees and metres in the photo's frame,
    the camera path format's {"yaw", "pitch", "position"}), at the run's image size and focal length."""
    w, h = state.size
    shortcut = yaw is not None or pitch is not None or move is not None
    if path is not None and shortcut:
        raise StitchError("give either --path FILE.json or --yaw/--pitch/--move, not both")
    if path is not None:
        return load_camera_path(path, w, h)
    if not shortcut:
        return []
    entry: dict = {"yaw": yaw or 0.0, "pitch": pitch or 0.0}
    if move is not None:
        entry["position"] = list(move)
    return [camera_from_entry(entry, w, h, state.cameras[0].focal, "--yaw/--pitch/--move camera")]


# --- guard rails ------------------------------------------------------------------------------------


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


# --- extend -----------------------------------------------------------------------------------------


def load_backends(state: RunState, quiet: bool = True):
    """The run's outpainter and depth completer (the viewer keeps them between presses)."""
    from engine.run import build_backends

    return build_backends(state.config, quiet=quiet)


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
    with _run_lock(Path(root)):
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
            _snapshot(state, k)
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
        result.scene = _scene_path(state)
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
    output = _scene_path(state)
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


def _scene_path(state: RunState) -> Path:
    """Where the run's scene is (the same file `stitch view` shows)."""
    root = state.rd.root
    exported = state.manifest.get("exports", {}).get("ply")
    candidates = [root / "scene.ply"]
    if isinstance(exported, str):
        candidates += [Path(exported), root / Path(exported).name]
    return next((c for c in candidates if c.is_file()), root / "scene.ply")


# --- undo -------------------------------------------------------------------------------------------


def _tracked_files(state: RunState) -> dict[str, Path]:
    """Every file an added view replaces, by role."""
    rd = state.rd
    files = {
        "manifest": rd.manifest_path,
        "state": rd.checkpoint_dir / "state.json",
        "preview": rd.root / "preview.png",
        "camera_path": rd.root / CAMERA_PATH,
    }
    state_json = rd.checkpoint_dir / "state.json"
    if state_json.is_file():
        name = json.loads(state_json.read_text(encoding="utf-8")).get("gaussians")
        if isinstance(name, str):
            files["checkpoint"] = rd.checkpoint_dir / Path(name).name
    scene = _scene_path(state)
    files["ply"] = scene
    for fmt in ("splat", "spz"):
        if fmt in state.manifest.get("exports", {}):
            files[fmt] = scene.with_suffix(f".{fmt}")
    return files


def _snapshot(state: RunState, k: int) -> None:
    """Copy what view k will replace to RUN/undo/k/ (index.json names where each file came from)."""
    undo = state.rd.root / UNDO_DIR
    target = undo / f"{k:03d}"
    tmp = undo / f".{k:03d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    index = {}
    for role, path in _tracked_files(state).items():
        present = path.is_file()
        index[role] = {"path": str(path.resolve()), "present": present}
        if present:
            shutil.copyfile(path, tmp / role)
    (tmp / "index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def undo_last(root: str | Path) -> int:
    """Remove the last added view: its files go, the scene, checkpoint and manifest before it come back
    byte-for-byte. Returns the number of views left."""
    with _run_lock(Path(root)):
        rd = RunDirectory(Path(root))
        manifest = rd.read_manifest()
        extensions = manifest.get("extensions") or []
        if not extensions:
            raise StitchError(f"{rd.root} has no added views to undo (the planned views stay)")
        k = int(extensions[-1]["view"])
        snap = rd.root / UNDO_DIR / f"{k:03d}"
        if not (snap / "index.json").is_file():
            raise StitchError(f"the undo copy of view {k} is missing ({snap}); it cannot be undone")
        index = json.loads((snap / "index.json").read_text(encoding="utf-8"))
        # Checkpoint first, manifest last: a crash in between leaves a run that extend can finish again.
        order = ["checkpoint", "state"] + [r for r in index if r not in ("checkpoint", "state", "manifest")]
        for role in [*order, "manifest"]:
            entry = index.get(role)
            if entry is None:
                continue
            path = Path(entry["path"])
            if entry["present"]:
                atomic_write_bytes(path, (snap / role).read_bytes())
            else:
                path.unlink(missing_ok=True)
        kept = index.get("checkpoint", {}).get("path")
        for old in rd.checkpoint_dir.glob("gaussians_*.safetensors"):
            if kept is None or old.resolve() != Path(kept):
                old.unlink(missing_ok=True)
        for f in rd.views_dir.glob(f"*_{k:03d}.*"):
            f.unlink()
        shutil.rmtree(snap)
        with contextlib.suppress(OSError):
            (rd.root / UNDO_DIR).rmdir()  # only when empty
        return k


# --- one writer at a time ---------------------------------------------------------------------------


@contextlib.contextmanager
def _run_lock(root: Path):
    """RUN/.extend.lock holds the writer's pid: a second extend (another process, the viewer) is refused
    while one is stitching; a lock whose process is gone is taken over."""
    path = root / LOCK_NAME
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _holder_alive(path):
                raise StitchError(
                    f"{root} is being extended by another process (pid {path.read_text().strip()}); "
                    "wait for it to finish"
                ) from None
            path.unlink(missing_ok=True)
            continue
        except OSError as exc:
            why = exc.strerror or exc
            raise StitchError(f"cannot lock {root} for extending ({why}); check permissions") from exc
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _holder_alive(path: Path) -> bool:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- command line -----------------------------------------------------------------------------------


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
