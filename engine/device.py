"""Which device a command runs on, and whether gsplat can run there.

`resolve_device("auto" | "cpu" | "cuda" | "cuda:N")`: auto picks CUDA when torch sees a GPU (or what the
STITCH_DEVICE environment variable says); an explicit index is kept (cuda:1 stays cuda:1). On CUDA the
Gaussians live on the GPU and every render goes through `gsplat.rasterization` (splat/render.py); on CPU the
numba tile rasterizer does the same work.

gsplat from PyPI ships CUDA sources, not binaries: its first use JIT-compiles the kernels with nvcc (minutes,
once; cached under torch's extension directory). `check_gsplat(device)` says so in one line up front instead
of failing deep inside gsplat: it passes when a prebuilt extension (`gsplat.csrc`) or an earlier JIT build
exists, or nvcc is found; otherwise it raises StitchError naming the fixes.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import torch

from splat.errors import StitchError

DEVICE_HELP = "auto (cuda when available) | cpu | cuda | cuda:N"


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> torch.device; a CUDA device that is not there is one line."""
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    if name == "auto":
        # STITCH_DEVICE pins "auto" (the test suite pins CPU-only tests to the CPU on GPU machines).
        name = os.environ.get("STITCH_DEVICE", "").strip().lower() or "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise StitchError(f"unknown device {name!r}; use {DEVICE_HELP}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise StitchError(f"device {name!r} is not supported; use {DEVICE_HELP}")
    if not torch.cuda.is_available():
        raise StitchError(f"--device {name}: CUDA is not available here; use --device cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise StitchError(
            f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s) (cuda:0..)"
        )
    return device


def describe_device(device: torch.device) -> dict:
    """What the manifest records: the device that really ran, and the GPU's name on CUDA."""
    from splat import render as splat_render

    out: dict = {"device": str(device)}
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        out["gpu"] = torch.cuda.get_device_name(index)
    out["renderer"] = "gsplat" if splat_render.uses_gsplat(device) else "cpu-tile-rasterizer"
    return out


def _jit_build_exists() -> bool:
    try:
        from torch.utils.cpp_extension import _get_build_directory

        build = Path(_get_build_directory("gsplat_cuda", verbose=False))
    except Exception:  # private torch API: absence means "not known to be built"
        return False
    return (build / "gsplat_cuda.so").exists() or (build / "gsplat_cuda.lib").exists()


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    try:
        from torch.utils.cpp_extension import CUDA_HOME
    except Exception:
        CUDA_HOME = None
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), CUDA_HOME):
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return str(Path(home) / "bin" / "nvcc")
    return None


def check_gsplat(device: torch.device, stream=sys.stderr, quiet: bool = False) -> None:
    """Before any CUDA work: can gsplat run here? One line on stderr when it will JIT-compile now."""
    if device.type != "cuda":
        return
    if importlib.util.find_spec("gsplat") is None:
        raise StitchError("running on CUDA needs gsplat (pip install gsplat==1.5.3); or use --device cpu")
    if importlib.util.find_spec("gsplat.csrc") is not None or _jit_build_exists():
        return  # a prebuilt wheel, or the kernels were compiled before
    if _nvcc() is None:
        raise StitchError(
            "gsplat from PyPI compiles its CUDA kernels on first use and needs nvcc, which is not on PATH or "
            "in CUDA_HOME: install the CUDA toolkit (nvcc), or a prebuilt gsplat wheel, or use --device cpu"
        )
    if not quiet:
        print(
            "gsplat: compiling its CUDA kernels with nvcc on first use (a few minutes, once)",
            file=stream,
            flush=True,
        )


def place_gaussians(gaussians, device: torch.device):
    """The same Gaussians on `device` (a new set when it moves; the set itself when it is there already)."""
    from splat.gaussians import Gaussians

    if gaussians.device == device or (device.index is None and gaussians.device.type == device.type):
        return gaussians
    return Gaussians({k: v.to(device) for k, v in gaussians.tensors().items()})


def dtype_kwargs(library: str, dtype) -> dict:
    """The dtype keyword a `from_pretrained` of `library` ("diffusers" | "transformers") accepts.

    Newer releases take `dtype=` and deprecate `torch_dtype=`; the floors in pyproject (diffusers 0.30,
    transformers 4.45) only know `torch_dtype=`. transformers renamed it in 4.56; diffusers resolves both
    where `diffusers.utils.deprecation_utils._resolve_dtype` exists."""
    if dtype is None:
        return {}
    if library == "transformers":
        from importlib.metadata import version

        from packaging.version import Version

        return (
            {"dtype": dtype}
            if Version(version("transformers")) >= Version("4.56")
            else {"torch_dtype": dtype}
        )
    try:
        from diffusers.utils import deprecation_utils

        new = hasattr(deprecation_utils, "_resolve_dtype")
    except ImportError:
        new = False
    return {"dtype": dtype} if new else {"torch_dtype": dtype}
