"""Undo an added view byte for byte (RUN/undo/XXX/ copies), and one writer at a time (RUN/.extend.lock)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

from engine.extend.state import CAMERA_PATH, LOCK_NAME, UNDO_DIR, RunState, scene_path
from engine.rundir import RunDirectory, atomic_write_bytes
from splat.errors import StitchError


def tracked_files(state: RunState) -> dict[str, Path]:
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
    scene = scene_path(state)
    files["ply"] = scene
    for fmt in ("splat", "spz"):
        if fmt in state.manifest.get("exports", {}):
            files[fmt] = scene.with_suffix(f".{fmt}")
    return files


def snapshot(state: RunState, k: int) -> None:
    """Copy what view k will replace to RUN/undo/k/ (index.json names where each file came from)."""
    undo = state.rd.root / UNDO_DIR
    target = undo / f"{k:03d}"
    tmp = undo / f".{k:03d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    index = {}
    for role, path in tracked_files(state).items():
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
    with run_lock(Path(root)):
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


@contextlib.contextmanager
def run_lock(root: Path):
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
