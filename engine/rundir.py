"""The run directory: per-view artefacts, the manifest and resumable checkpoints, all written atomically.

Layout:
    manifest.json                 inputs, config, cameras, backends, versions, timings
    input.png                     the photo as the scene was built from it (resized)
    views/view_XXX.png            each view's final image (rendered + outpainted)
    views/image_XXX.npy           the same image exactly (float32), what --resume trains on
    views/depth_XXX.npy           its completed depth in metres (float32)
    views/depth_XXX.png           the same as 16-bit millimetres, for other tools
    views/new_XXX.png             pixels that seeded new Gaussians (white)
    views/inpaint_XXX.png         pixels the outpainter filled (white)
    checkpoint/gaussians_XXX.safetensors + checkpoint/state.json   the scene after view XXX
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from engine.images import depth_to_png16, save_png
from splat.errors import StitchError

if TYPE_CHECKING:
    from engine.config import GenerateConfig
    from splat.cameras import Camera

STATE_VERSION = 1
# The fixed names a run writes into its root; never over a file that is not from a stitch run.
RUN_FILES = ("input.png", "manifest.json", "preview.png")
RUN_FOLDERS = ("views", "checkpoint")
_CHECKPOINT_NAME = re.compile(r"gaussians_\d{3,}\.safetensors")
_TEMP_NAME = re.compile(r"\..+\.tmp\d+")  # atomic_write_bytes / save_checkpoint temp names


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file beside `path`, fsync, then rename: readers never see a partial file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None and exc.errno is not None:  # name the file in the user's error line
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=2, sort_keys=False).encode("utf-8"))


class RunDirectory:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        # Set from the manifest: checkpoints carry it, so a resume never continues another run's state.
        self.run_id: str | None = None
        self.n_views: int | None = None  # cameras in the manifest: a checkpoint cannot claim more views

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def views_dir(self) -> Path:
        return self.root / "views"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoint"

    def create(self) -> None:
        try:
            self.views_dir.mkdir(parents=True, exist_ok=True)
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StitchError(
                f"cannot create run directory {self.root} ({exc.strerror}); pick another --run-dir"
            ) from exc

    # --- manifest -----------------------------------------------------------------------------------
    def read_manifest(self) -> dict:
        if not self.manifest_path.is_file():
            raise StitchError(
                f"{self.root} has no manifest.json; it is not a run directory of stitch generate"
            )
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StitchError(f"{self.manifest_path} is damaged ({exc}); start a new run") from exc
        except RecursionError as exc:
            why = "nested too deeply"
            raise StitchError(f"{self.manifest_path} is damaged ({why}); start a new run") from exc
        except ValueError as exc:  # e.g. an integer beyond Python's int-str digit limit
            raise StitchError(f"{self.manifest_path} is damaged ({exc}); start a new run") from exc
        if not isinstance(manifest, dict):
            raise StitchError(f"{self.manifest_path} is damaged (not a JSON object); start a new run")
        run_id = manifest.get("run_id")
        if run_id is not None and not isinstance(run_id, str):
            raise StitchError(f"{self.manifest_path} is damaged (run_id is not a string); start a new run")
        self.run_id = run_id
        for key in ("exports", "quality", "backends"):
            if key in manifest and not isinstance(manifest[key], dict):
                why = f"{key} is not an object"
                raise StitchError(f"{self.manifest_path} is damaged ({why}); start a new run")
        return manifest

    def read_cameras(self, manifest: dict) -> list[Camera]:
        """The manifest's cameras, each validated (a damaged list is one StitchError, not a TypeError)."""
        from splat.cameras import Camera

        cameras = manifest.get("cameras", [])
        if not isinstance(cameras, list):
            raise StitchError(f"{self.manifest_path} is damaged (cameras is not a list); start a new run")
        out = []
        for i, entry in enumerate(cameras):
            try:
                out.append(Camera.from_dict(entry))
            except StitchError as exc:
                why = f"camera {i}: {exc}"
                raise StitchError(f"{self.manifest_path} is damaged ({why}); start a new run") from exc
        self.n_views = len(out)
        return out

    def read_config(self, manifest: dict) -> GenerateConfig:
        """The manifest's generation config, every field type- and range-checked (engine.typed)."""
        from engine.config import GenerateConfig
        from engine.trajectory import MODES
        from engine.typed import from_dict

        if "config" not in manifest:
            raise StitchError(f"{self.manifest_path} is damaged (no config); start a new run")
        where = f"{self.manifest_path} is damaged (config)"
        config = from_dict(GenerateConfig, manifest["config"], where, CONFIG_BOUNDS)
        if config.mode not in MODES:
            raise StitchError(f"{where}: unknown mode {config.mode!r}; start a new run")
        return config

    def write_manifest(self, manifest: dict) -> None:
        atomic_write_json(self.manifest_path, manifest)

    # --- per-view artefacts -------------------------------------------------------------------------
    def view_path(self, kind: str, index: int, suffix: str = ".png") -> Path:
        return self.views_dir / f"{kind}_{index:03d}{suffix}"

    def save_view(
        self,
        index: int,
        image: np.ndarray,  # [H, W, 3] float in [0, 1]
        depth: np.ndarray,  # [H, W] metres
        new_mask: np.ndarray,  # [H, W] bool
        inpaint_mask: np.ndarray,  # [H, W] bool
    ) -> None:
        save_png(image, self.view_path("view", index))
        # The PNG rounds to 8 bits; a resumed run must train on the very pixels the first session used.
        atomic_write_bytes(self.view_path("image", index, ".npy"), _npy_bytes(image.astype(np.float32)))
        buf = _npy_bytes(depth.astype(np.float32))
        atomic_write_bytes(self.view_path("depth", index, ".npy"), buf)
        depth_to_png16(depth, self.view_path("depth", index))
        save_png(new_mask.astype(np.uint8) * 255, self.view_path("new", index))
        save_png(inpaint_mask.astype(np.uint8) * 255, self.view_path("inpaint", index))

    def load_view(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> image [H, W, 3] float32, depth [H, W] float32, new-pixel mask [H, W] bool."""
        try:
            exact = self.view_path("image", index, ".npy")
            if exact.is_file():
                image = np.load(exact, allow_pickle=False).astype(np.float32, copy=False)
            else:  # runs written before image_XXX.npy existed
                image = (
                    np.asarray(Image.open(self.view_path("view", index)).convert("RGB"), dtype=np.float32)
                    / 255
                )
            depth = np.load(self.view_path("depth", index, ".npy"), allow_pickle=False)
            new = np.asarray(Image.open(self.view_path("new", index))) > 127
        except (OSError, ValueError) as exc:
            raise StitchError(f"view {index} in {self.root} is damaged ({exc}); start a new run") from exc
        if (
            image.ndim != 3
            or image.shape[2] != 3
            or depth.shape != image.shape[:2]
            or new.shape != depth.shape
        ):
            raise StitchError(
                f"view {index} in {self.root} is damaged (image {image.shape}, depth {depth.shape}, mask "
                f"{new.shape} disagree); start a new run"
            )
        return image, depth, new

    # --- checkpoints --------------------------------------------------------------------------------
    def save_checkpoint(self, views_done: int, tensors: dict[str, torch.Tensor], extra: dict) -> None:
        """Gaussians after `views_done` views; state.json is replaced last so it names a whole file."""
        name = f"gaussians_{views_done - 1:03d}.safetensors"
        path = self.checkpoint_dir / name
        data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        tmp = path.with_name(f".{name}.tmp{os.getpid()}")
        try:
            save_file(data, str(tmp))
            with tmp.open("rb") as f:
                os.fsync(f.fileno())
            tmp.replace(path)
        except SafetensorError as exc:  # safetensors reports a full disk (ENOSPC) as its own error type
            tmp.unlink(missing_ok=True)
            raise StitchError(
                f"cannot write checkpoint {path} ({exc}); free space, then continue with --resume {self.root}"
            ) from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        run = {"run_id": self.run_id} if self.run_id else {}
        atomic_write_json(
            self.checkpoint_dir / "state.json",
            {"version": STATE_VERSION, "views_done": views_done, "gaussians": name, **run, **extra},
        )
        # Older checkpoints are no longer needed once the state points past them.
        for old in self.checkpoint_dir.glob("gaussians_*.safetensors"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def load_checkpoint(self) -> tuple[int, dict[str, torch.Tensor] | None, dict]:
        """-> (views_done, tensors or None, state). No checkpoint: (0, None, {})."""
        state_path = self.checkpoint_dir / "state.json"
        if not state_path.is_file():
            return 0, None, {}
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
            if not isinstance(state, dict):
                raise ValueError("state.json is not a JSON object")
            if self.run_id is not None and state.get("run_id") != self.run_id:
                # Another run's state (a new run started here and died before its first checkpoint):
                # continuing from it would put that run's scene under this run's manifest.
                return 0, None, {}
            name, views_done = state["gaussians"], state["views_done"]
            # Only a file of our own naming inside checkpoint/: a damaged or hand-edited state.json must not
            # point the loader anywhere else.
            if not (isinstance(name, str) and _CHECKPOINT_NAME.fullmatch(name)):
                raise ValueError(f"state.json names {name!r}, not a gaussians_XXX.safetensors file")
            if isinstance(views_done, bool) or not isinstance(views_done, int) or views_done < 1:
                raise ValueError(f"views_done {views_done!r} is not a positive integer")
            if self.n_views is not None and views_done > self.n_views:
                raise ValueError(f"views_done {views_done} is more than the run's {self.n_views} cameras")
            if not isinstance(state.get("timings", []), list):
                raise ValueError("timings is not a list")
            tensors = load_file(str(self.checkpoint_dir / name))
            check_scene_tensors(tensors)
        except (OSError, ValueError, KeyError, TypeError, SafetensorError, RecursionError) as exc:
            raise StitchError(
                f"checkpoint in {self.checkpoint_dir} is damaged ({exc}); start a new run"
            ) from exc
        return views_done, tensors, state

    # --- starting a run -----------------------------------------------------------------------------
    def claim(
        self, inputs: Sequence[Path | None], outputs: Sequence[Path], image: np.ndarray | None = None
    ) -> None:
        """Before a new run writes here: refuse to overwrite an input (the photo named input.png in this
        folder) or a file no stitch run wrote (a user's manifest.json, preview.png, views/...), then forget a
        previous run's checkpoint so nothing can resume it under the new manifest."""
        mine = {self.root / n for n in RUN_FILES} | {Path(p) for p in outputs}
        for given in inputs:
            if given is None:
                continue
            g = _resolved(given)
            hit = next((m for m in mine if _resolved(m) == g), None)
            if hit is None and any(_inside(g, self.root / d) for d in RUN_FOLDERS):
                hit = g
            if hit is not None:
                raise StitchError(
                    f"{given} would be overwritten by the run's {Path(hit).name} in {self.root}; copy it "
                    "elsewhere or pick another --run-dir / -o"
                )
        if not self.root.is_dir():
            return
        previous_run = False
        if self.manifest_path.is_file():
            try:
                previous_run = _is_stitch_manifest(json.loads(self.manifest_path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError, ValueError, RecursionError):
                previous_run = False
        if not previous_run:
            foreign = [n for n in RUN_FILES if (self.root / n).exists()]
            if "input.png" in foreign and image is not None and _same_pixels(self.root / "input.png", image):
                foreign.remove("input.png")  # this very command, stopped before its manifest (disk full)
            foreign += [
                f"{d}/" for d in RUN_FOLDERS if (self.root / d).is_dir() and any((self.root / d).iterdir())
            ]
            foreign += [
                f"{d}" for d in RUN_FOLDERS if (self.root / d).exists() and not (self.root / d).is_dir()
            ]
            if foreign:
                raise StitchError(
                    f"{self.root} already holds {', '.join(foreign)} that no stitch run wrote; the run would "
                    "overwrite them: pick an empty --run-dir (or another -o folder)"
                )
            return
        # A finished or abandoned stitch run: its state must not be resumed as the new run's.
        (self.checkpoint_dir / "state.json").unlink(missing_ok=True)
        if self.checkpoint_dir.is_dir():
            for old in self.checkpoint_dir.glob("gaussians_*.safetensors"):
                old.unlink(missing_ok=True)

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete temp files a killed process left behind (`.NAME.tmpPID`, `NAME.tmp`): they never replaced
        a good file, and a resumed run writes its own."""
        removed = []
        # The root may be a user's folder (--output ./scene.ply): only our own file names there.
        ours = {"input.png.tmp", "preview.png.tmp"}
        for folder, mine in ((self.root, False), (self.views_dir, True), (self.checkpoint_dir, True)):
            if not folder.is_dir():
                continue
            for f in folder.iterdir():
                temp = _TEMP_NAME.fullmatch(f.name) or f.name.endswith(".tmp")
                ours_too = f.name in ours or f.name.startswith((".manifest.json.", ".scene.ply."))
                if temp and f.is_file() and (mine or ours_too):
                    f.unlink(missing_ok=True)
                    removed.append(f)
        return removed


# Ranges of the generation config fields read back from a manifest (engine.typed.from_dict).
CONFIG_BOUNDS = {
    "seed": (0, 2**32 - 1),
    "max_side": (32, 8192),
    "sh_degree": (0, 3),
    "outpaint_steps": (0, 1000),
    "fusion.coverage_threshold": (0.0, 1.0),
    "fusion.erode_px": (0, 64),
    "fusion.dilate_px": (0, 64),
    "fusion.points_stride": (1, 64),
    "fusion.max_gaussians": (0, None),
    "optim.steps_per_view": (0, 100_000),
    "optim.final_steps": (0, 1_000_000),
    "optim.resolution_scale": (0.01, 1.0),
}


def check_scene_tensors(tensors: dict[str, torch.Tensor]) -> None:
    """ValueError unless `tensors` is a non-empty, finite, floating-point Gaussian scene of matching shapes
    (an emptied or retyped checkpoint must never replace a good scene.ply)."""
    from splat.gaussians import PARAM_KEYS, Gaussians

    if not isinstance(tensors, dict):
        raise ValueError("not a tensor dictionary")
    for key in PARAM_KEYS:
        t = tensors.get(key)
        if t is None:
            raise ValueError(f"tensor {key!r} is missing")
        if not t.is_floating_point():
            raise ValueError(f"tensor {key!r} has dtype {t.dtype}, expected floating point")
    Gaussians(tensors)  # shapes agree (raises ValueError)
    n = tensors["means"].shape[0]
    if n < 1:
        raise ValueError("it holds no Gaussians")
    for key in PARAM_KEYS:
        if not torch.isfinite(tensors[key]).all():
            raise ValueError(f"tensor {key!r} holds NaN or Inf")


def _same_pixels(path: Path, image: np.ndarray) -> bool:
    from engine.images import to_uint8

    try:
        with Image.open(path) as img:
            if img.size != (image.shape[1], image.shape[0]):  # header only: never decode a big foreign file
                return False
            return np.array_equal(np.asarray(img.convert("RGB")), to_uint8(image))
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def _is_stitch_manifest(data: object) -> bool:
    return isinstance(data, dict) and "config" in data and "input_png_sha256" in data


def _resolved(path: Path) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))


def _inside(path: Path, folder: Path) -> bool:
    folder = _resolved(folder)
    return path != folder and folder in path.parents


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()
