"""Device choice and the GPU audit fixes that can be checked without a GPU (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import engine.device as device_mod
from completion.training.build import resolve_amp_dtype
from completion.training.config import TrainConfig, config_from_dict
from completion.training.distributed import DistInfo, process_device
from engine.backends.models import ResolvedModel, model_load_errors
from engine.device import check_gsplat, dtype_kwargs, resolve_device
from splat.errors import StitchError


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_explicit_cuda_index_is_kept(two_gpus):
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(StitchError, match="has 2 CUDA device"):
        resolve_device("cuda:2")
    # Training in one process keeps cuda:1; under torchrun each rank takes its local GPU.
    assert process_device(torch.device("cuda", 1), DistInfo()) == torch.device("cuda", 1)
    assert process_device(torch.device("cuda", 1), DistInfo(1, 2, 1)) == torch.device("cuda", 1)
    assert process_device(torch.device("cuda", 0), DistInfo(1, 2, 1)) == torch.device("cuda", 1)


def test_auto_honours_stitch_device_and_bad_names_are_one_line(monkeypatch, two_gpus):
    monkeypatch.setenv("STITCH_DEVICE", "cpu")
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setenv("STITCH_DEVICE", "auto")
    assert resolve_device("auto") == torch.device("cuda")
    with pytest.raises(StitchError, match="unknown device 'gpu'"):
        resolve_device("gpu")


def test_cuda_asked_without_cuda_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(StitchError, match="CUDA is not available here; use --device cpu"):
        resolve_device("cuda")


def test_missing_nvcc_is_said_up_front(monkeypatch):
    monkeypatch.setattr(
        device_mod.importlib.util, "find_spec", lambda name: None if name == "gsplat.csrc" else 1
    )
    monkeypatch.setattr(device_mod, "_jit_build_exists", lambda: False)
    monkeypatch.setattr(device_mod, "_nvcc", lambda: None)
    with pytest.raises(StitchError, match="compiles its CUDA kernels on first use and needs nvcc"):
        check_gsplat(torch.device("cuda"))
    check_gsplat(torch.device("cpu"))  # nothing to check on CPU


def test_nvcc_present_gives_one_line_before_compiling(monkeypatch, capsys):
    import sys

    monkeypatch.setattr(
        device_mod.importlib.util, "find_spec", lambda name: None if name == "gsplat.csrc" else 1
    )
    monkeypatch.setattr(device_mod, "_jit_build_exists", lambda: False)
    monkeypatch.setattr(device_mod, "_nvcc", lambda: "/usr/local/cuda/bin/nvcc")
    check_gsplat(torch.device("cuda"), stream=sys.stderr)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "compiling its CUDA kernels" in err
    monkeypatch.setattr(device_mod, "_jit_build_exists", lambda: True)  # built before: silent
    check_gsplat(torch.device("cuda"), stream=sys.stderr)
    assert capsys.readouterr().err == ""


def test_auto_amp_uses_native_bf16_only(monkeypatch):
    cfg = TrainConfig()
    cuda = torch.device("cuda")

    def bf16(including_emulation=True):  # a V100/T4: bf16 only by emulation
        return including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", bf16)
    assert resolve_amp_dtype(cfg, cuda) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # A100
    assert resolve_amp_dtype(cfg, cuda) == torch.bfloat16
    assert resolve_amp_dtype(cfg, torch.device("cpu")) is None


def test_amp_value_is_validated():
    with pytest.raises(StitchError, match="unknown amp 'bf17'"):
        config_from_dict({"amp": "bf17"})


def test_out_of_memory_while_loading_is_named_as_such():
    model = ResolvedModel("sd2-inpainting", Path("/models/sd2"), "model-path")
    with pytest.raises(StitchError) as info, model_load_errors("outpainter", [model]):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    msg = str(info.value)
    assert "out of GPU memory" in msg and "--cpu-offload" in msg and "damaged" not in msg
    with pytest.raises(StitchError, match="damaged"), model_load_errors("outpainter", [model]):
        raise RuntimeError("Error(s) in loading state_dict: size mismatch")  # a real damaged file


def test_dtype_keyword_follows_the_installed_libraries():
    import diffusers
    from packaging.version import Version

    kw = dtype_kwargs("diffusers", torch.float16)
    assert kw == ({"dtype": torch.float16} if Version(diffusers.__version__) >= Version("0.37") else kw)
    assert list(dtype_kwargs("transformers", torch.float16)) in (["dtype"], ["torch_dtype"])
    assert dtype_kwargs("diffusers", None) == {}
