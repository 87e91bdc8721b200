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
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from engine.errors import StitchError
from engine.images import depth_to_png16, save_png

STATE_VERSION = 1
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
        if not isinstance(manifest, dict):
            raise StitchError(f"{self.manifest_path} is damaged (not a JSON object); start a new run")
        return manifest

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
        atomic_write_json(
            self.checkpoint_dir / "state.json",
            {"version": STATE_VERSION, "views_done": views_done, "gaussians": name, **extra},
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
            name, views_done = state["gaussians"], state["views_done"]
            # Only a file of our own naming inside checkpoint/: a damaged or hand-edited state.json must not
            # point the loader anywhere else.
            if not (isinstance(name, str) and _CHECKPOINT_NAME.fullmatch(name)):
                raise ValueError(f"state.json names {name!r}, not a gaussians_XXX.safetensors file")
            if isinstance(views_done, bool) or not isinstance(views_done, int) or views_done < 1:
                raise ValueError(f"views_done {views_done!r} is not a positive integer")
            tensors = load_file(str(self.checkpoint_dir / name))
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
            raise StitchError(
                f"checkpoint in {self.checkpoint_dir} is damaged ({exc}); start a new run"
            ) from exc
        return views_done, tensors, state

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


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()
