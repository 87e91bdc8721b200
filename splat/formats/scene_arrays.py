"""Shared pieces of the scene-file readers and writers: the error type, plain-array scenes, atomic writes.

Every format module (ply.py, splat_format.py, spz.py) converts between files and `SceneArrays`, a
numpy mirror of `Gaussians` in the same units (log scales, logit opacities, wxyz quaternions), so
validation and the torch conversion live here once.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import torch

from splat.errors import StitchError
from splat.gaussians import Gaussians

PathLike = str | os.PathLike
Device = str | torch.device


class SceneFileError(StitchError):
    """A scene file could not be read or written (a ValueError); the message starts with the path."""


def fail(path: PathLike, problem: str) -> SceneFileError:
    """Build the one error type every reader raises: '<path>: <problem>'."""
    return SceneFileError(f"{os.fspath(path)}: {problem}")


@dataclass
class SceneArrays:
    """A Gaussian scene as float32 numpy arrays, in `Gaussians`' units and axes."""

    means: np.ndarray  # [N, 3]
    scales: np.ndarray  # [N, 3] natural log of standard deviations
    quats: np.ndarray  # [N, 4] (w, x, y, z), not necessarily normalised
    opacities: np.ndarray  # [N] logits
    sh0: np.ndarray  # [N, 3] DC coefficient
    shN: np.ndarray  # [N, K, 3] higher coefficients, K in {0, 3, 8, 15}

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        return {0: 0, 3: 1, 8: 2, 15: 3}[int(self.shN.shape[1])]

    def fields(self) -> dict[str, np.ndarray]:
        return {
            "means": self.means,
            "scales": self.scales,
            "quats": self.quats,
            "opacities": self.opacities,
            "sh0": self.sh0,
            "shN": self.shN,
        }

    def check_finite(self, path: PathLike, action: str) -> None:
        """NaN/Inf anywhere is an error: such a Gaussian renders as garbage or poisons training."""
        for name, arr in self.fields().items():
            bad = ~np.isfinite(arr.reshape(len(self), -1)).all(axis=1) if arr.size else np.zeros(0, bool)
            if bad.any():
                idx = np.flatnonzero(bad)
                raise fail(
                    path,
                    f"{len(idx)} of {len(self)} Gaussians have NaN/Inf in '{name}' "
                    f"(first at index {idx[0]}); refusing to {action} (prune them first)",
                )

    @classmethod
    def from_gaussians(cls, gaussians: Gaussians) -> SceneArrays:
        t = {k: v.detach().to("cpu", torch.float32).numpy() for k, v in gaussians.params.items()}
        return cls(
            means=t["means"],
            scales=t["scales"],
            quats=t["quats"],
            opacities=t["opacities"],
            sh0=t["sh0"][:, 0, :],
            shN=t["shN"],
        )

    def to_gaussians(self, device: Device = "cpu") -> Gaussians:
        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)

        return Gaussians(
            {
                "means": tensor(self.means),
                "scales": tensor(self.scales),
                "quats": tensor(self.quats),
                "opacities": tensor(self.opacities),
                "sh0": tensor(self.sh0[:, None, :]),
                "shN": tensor(self.shN),
            }
        )


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def logit(p: np.ndarray, eps: float) -> np.ndarray:
    """Inverse sigmoid with p clamped to [eps, 1 - eps] so 8-bit alphas of 0 or 255 stay finite."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    return np.log(p / (1.0 - p))


def normalised_quats(quats: np.ndarray) -> np.ndarray:
    """[N, 4] -> unit quaternions; a zero quaternion becomes the identity (w=1) instead of NaN."""
    q = np.asarray(quats, dtype=np.float64)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    out = np.divide(q, norm, out=np.zeros_like(q), where=norm > 0)
    out[norm[:, 0] == 0, 0] = 1.0
    return out


def as_bytes(arr: np.ndarray) -> memoryview:
    """A zero-copy byte view of an array (empty arrays included) for file.write."""
    return memoryview(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))


# Readers hold the whole file plus float arrays of every Gaussian: refuse what cannot fit before reading
# (a sparse 100 GB file used to end in a MemoryError traceback). 2 GiB of .ply is ~8.6M Gaussians (SH 3).
MAX_SCENE_BYTES = 2 << 30
MAX_SCENE_POINTS = 10_000_000  # decoded: up to ~2.4 GB of float32 arrays at SH degree 3


def check_readable(path: PathLike) -> int:
    """File size of an existing regular file of at most MAX_SCENE_BYTES, or a SceneFileError saying why
    it cannot be read."""
    p = Path(path)
    if not p.exists():
        raise fail(path, "no such file")
    if not p.is_file():
        raise fail(path, "not a regular file")
    try:
        size = p.stat().st_size
    except OSError as e:
        raise fail(path, f"cannot stat file ({e.strerror})") from e
    if size > MAX_SCENE_BYTES:
        raise fail(
            path,
            f"{size / 2**30:.1f} GiB is more than the {MAX_SCENE_BYTES >> 30} GiB this tool loads; "
            "prune or split the scene",
        )
    return size


def check_point_count(path: PathLike, n: int) -> None:
    if n > MAX_SCENE_POINTS:
        raise fail(
            path, f"{n} Gaussians is more than the {MAX_SCENE_POINTS:,} this tool loads; prune the scene"
        )


@contextlib.contextmanager
def _temp_beside(path: Path) -> Iterator[tuple[IO[bytes], Path]]:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f, tmp
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file so that readers see either the old file or the complete new one, never a torn write.

    The bytes go to a temp file in the same directory (same filesystem, so os.replace is atomic),
    are fsynced, and only then renamed over `path`; the directory is fsynced so the rename survives a
    crash too. On any error the temp file is removed and `path` is untouched.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise fail(path, f"cannot create directory {target.parent} ({e.strerror})") from e
    if target.is_dir():
        raise fail(path, "is a directory; give a file name such as scene.ply")
    try:
        with _temp_beside(target) as (f, tmp):
            write(f)
            f.flush()
            os.fsync(f.fileno())
            # mkstemp makes the file 0600; keep the old file's mode, else the usual 0644.
            mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
            os.chmod(tmp, mode)
            f.close()
            os.replace(tmp, target)
    except OSError as e:
        raise fail(path, f"cannot write file ({e.strerror or e})") from e
    with contextlib.suppress(OSError):
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
