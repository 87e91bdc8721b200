"""Reliability: damaged, truncated, mismatched or booby-trapped model files give one line and exit code 2
through `stitch generate --depth/--outpainter`, and unpickling never runs code (a marker file proves it).

Every pickled file here carries an object whose unpickling would create MARKER; a control test shows that a
plain `torch.load(weights_only=False)` of the same file does create it, so the marker would catch a loader
that unpickles unsafely.
"""

from __future__ import annotations

import json
import pickle
import shutil
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reliability_harness import CliResult, run_cli_many, save_photo

WEIGHTS = "model.safetensors"


class CodeOnUnpickle:
    """Unpickling this runs `exec`, which writes `marker`: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'a').write('code ran\\n')",))


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    flags: Callable[[Path], list[str]]  # models root -> generate flags
    expect: str  # "works" or a substring of the one-line error


def _depth(rel: str) -> Callable[[Path], list[str]]:
    return lambda root: ["--depth", str(root / rel)]


CASES = [
    Case("net-ok", "completion network folder", _depth("net"), "works"),
    Case("net-truncated", "model.safetensors cut in half", _depth("net_truncated"), "SafetensorError"),
    Case("net-random", "model.safetensors of random bytes", _depth("net_random"), "SafetensorError"),
    Case("net-empty", "model.safetensors of 0 bytes", _depth("net_empty"), "SafetensorError"),
    Case("net-huge-header", "safetensors header length 10^12", _depth("net_huge_header"), "SafetensorError"),
    Case("net-wrong-shape", "one tensor of the wrong shape", _depth("net_wrong_shape"), "size mismatch"),
    Case("net-missing-tensor", "one tensor missing", _depth("net_missing"), "does not match its config"),
    Case("net-config-not-json", "config.json not JSON", _depth("net_bad_json"), "not valid JSON"),
    Case("net-config-wrong-type", "config.json with a wrong type", _depth("net_bad_config"), "cannot load"),
    Case("pt-ok", "original-naming .pt checkpoint", _depth("pt/ok.pt"), "works"),
    Case("pt-pickled-code", ".pt (torch.save) with pickled code", _depth("pt/evil.pt"), "safely"),
    Case("pt-pickled-code-plain", "plain pickle with code", _depth("pt/evil_plain.pt"), "safely"),
    Case("pt-truncated", ".pt cut short", _depth("pt/truncated.pt"), "safely"),
    Case(
        "pt-wrong-shape", ".pt with a tensor of the wrong shape", _depth("pt/wrong_shape.pt"), "wrong shape"
    ),
    Case("pt-not-state-dict", ".pt holding a list", _depth("pt/not_dict.pt"), "not a state dict"),
    Case("mono-ok", "transformers depth model", lambda r: ["--depth", f"mono:{r / 'mono'}"], "works"),
    Case(
        "mono-truncated",
        "transformers model.safetensors cut short",
        lambda r: ["--depth", f"mono:{r / 'mono_truncated'}"],
        "SafetensorError",
    ),
    Case(
        "mono-pickled-bin",
        "transformers pytorch_model.bin with pickled code",
        lambda r: ["--depth", f"mono:{r / 'mono_evil'}"],
        "UnpicklingError",
    ),
    Case(
        "mono-remote-code",
        "config.json whose auto_map names a local .py that runs code",
        lambda r: ["--depth", f"mono:{r / 'mono_remote'}"],
        "works",
    ),
    Case(
        "sd-unet-truncated",
        "diffusers UNet safetensors cut short",
        lambda r: ["--outpainter", str(r / "sd_truncated")],
        "not a diffusers inpainting pipeline",
    ),
    Case(
        "sd-unet-pickled-bin",
        "diffusers UNet .bin with pickled code",
        lambda r: ["--outpainter", str(r / "sd_evil")],
        "not a diffusers inpainting pipeline",
    ),
]


def _copy(src: Path, dst: Path, fn: Callable[[Path], None]) -> None:
    shutil.copytree(src, dst)
    fn(dst)


def build_models(root: Path, marker: Path) -> None:
    from safetensors.torch import load_file, save_file
    from tiny_learned_models import make_tiny_completion, make_tiny_depth_anything, make_tiny_inpaint_pipeline

    from completion.network.checkpoint import hf_to_original, save_original_checkpoint
    from completion.network.model import DepthCompletionModel

    torch.set_num_threads(1)
    net = make_tiny_completion(root / "net")
    data = (net / WEIGHTS).read_bytes()
    _copy(net, root / "net_truncated", lambda d: (d / WEIGHTS).write_bytes(data[: len(data) // 2]))
    _copy(
        net,
        root / "net_random",
        lambda d: (d / WEIGHTS).write_bytes(
            torch.randint(0, 255, (4096,), dtype=torch.uint8).numpy().tobytes()
        ),
    )
    _copy(net, root / "net_empty", lambda d: (d / WEIGHTS).write_bytes(b""))
    _copy(
        net, root / "net_huge_header", lambda d: (d / WEIGHTS).write_bytes(struct.pack("<Q", 10**12) + b"{}")
    )

    def reshape_one(d: Path) -> None:
        state = load_file(str(d / WEIGHTS))
        key = sorted(k for k in state if state[k].ndim == 2)[0]
        state[key] = torch.zeros(*[s + 1 for s in state[key].shape])
        save_file(state, str(d / WEIGHTS))

    def drop_one(d: Path) -> None:
        state = load_file(str(d / WEIGHTS))
        del state[sorted(state)[0]]
        save_file(state, str(d / WEIGHTS))

    _copy(net, root / "net_wrong_shape", reshape_one)
    _copy(net, root / "net_missing", drop_one)
    _copy(net, root / "net_bad_json", lambda d: (d / "config.json").write_text("{not json"))
    config = json.loads((net / "config.json").read_text())
    _copy(
        net,
        root / "net_bad_config",
        lambda d: (d / "config.json").write_text(json.dumps({**config, "zoedepth": 5})),
    )

    model = DepthCompletionModel.from_pretrained(net)
    pt = root / "pt"
    pt.mkdir()
    save_original_checkpoint(model, pt / "ok.pt")
    (pt / "config.json").write_text(json.dumps(model.config.to_json_dict()))  # the tiny size, beside the .pt
    torch.save({"model": {"weight": CodeOnUnpickle(marker)}}, pt / "evil.pt")
    (pt / "evil_plain.pt").write_bytes(pickle.dumps({"model": {"w": CodeOnUnpickle(marker)}}, protocol=2))
    (pt / "truncated.pt").write_bytes((pt / "ok.pt").read_bytes()[:3000])
    original = hf_to_original(model.zoe.state_dict())
    key = sorted(k for k in original if original[k].ndim == 4)[0]
    original[key] = torch.zeros(*[s + 2 for s in original[key].shape])
    torch.save({"model": original}, pt / "wrong_shape.pt")
    torch.save({"model": [1, 2, 3]}, pt / "not_dict.pt")

    mono = make_tiny_depth_anything(root / "mono")
    mono_data = (mono / WEIGHTS).read_bytes()
    _copy(mono, root / "mono_truncated", lambda d: (d / WEIGHTS).write_bytes(mono_data[:1000]))

    def pickled_bin(d: Path) -> None:
        (d / WEIGHTS).unlink()
        torch.save({"weight": CodeOnUnpickle(marker)}, d / "pytorch_model.bin")

    _copy(mono, root / "mono_evil", pickled_bin)

    def remote_code(d: Path) -> None:
        (d / "evil_model.py").write_text(f"open({str(marker)!r}, 'a').write('remote code ran\\n')\n")
        cfg = json.loads((d / "config.json").read_text())
        cfg["auto_map"] = {
            "AutoConfig": "evil_model.EvilConfig",
            "AutoModelForDepthEstimation": "evil_model.EvilModel",
        }
        (d / "config.json").write_text(json.dumps(cfg))

    _copy(mono, root / "mono_remote", remote_code)

    sd = make_tiny_inpaint_pipeline(root / "sd")

    def unet_truncated(d: Path) -> None:
        unet = next((d / "unet").glob("*.safetensors"))
        unet.write_bytes(unet.read_bytes()[:500])

    def unet_pickled(d: Path) -> None:
        next((d / "unet").glob("*.safetensors")).unlink()
        torch.save({"weight": CodeOnUnpickle(marker)}, d / "unet" / "diffusion_pytorch_model.bin")

    _copy(sd, root / "sd_truncated", unet_truncated)
    _copy(sd, root / "sd_evil", unet_pickled)


@dataclass
class Matrix:
    results: dict[str, CliResult]
    root: Path
    marker: Path


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> Matrix:
    d = tmp_path_factory.mktemp("models")
    marker = d / "MARKER_code_ran"
    build_models(d / "models", marker)
    photo = save_photo(d / "photo.png", 64, 48)
    tiny = ["--mode", "single", "--max-side", "48", "--steps", "0", "-q"]
    cases = [
        ["generate", str(photo), *tiny, *c.flags(d / "models"), "-o", str(d / "out" / c.name / "scene.ply")]
        for c in CASES
    ]
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(d / "empty-hf-cache")}
    preload = (
        "completion.network.model",
        "transformers",
        "diffusers",
        "engine.backends.depth_network",
        "engine.backends.depth_mono",
    )
    results = run_cli_many(cases, d / "cli", env=env, preload=preload)
    return Matrix(dict(zip([c.name for c in CASES], results, strict=True)), d, marker)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_model_file_matrix(matrix, case: Case):
    r = matrix.results[case.name]
    assert "Traceback" not in r.stderr, r.stderr
    if case.expect == "works":
        assert r.code == 0, r.stderr
        assert r.stderr_lines == [], r.stderr  # -q: not even loading bars
    else:
        assert r.code == 2, (r.code, r.stderr)
        assert len(r.stderr_lines) == 1, r.stderr
        assert r.stderr_lines[0].startswith("error: ") and case.expect in r.stderr_lines[0], r.stderr
    assert not matrix.marker.exists(), f"{case.name}: unpickling ran code"


def test_the_marker_would_catch_unsafe_unpickling(matrix, tmp_path):
    """Control: the same evil checkpoint loaded without weights_only=True does run its code."""
    control = tmp_path / "control_marker"
    path = tmp_path / "evil.pt"
    torch.save({"w": CodeOnUnpickle(control)}, path)
    torch.load(path, weights_only=False)
    assert control.exists()
    assert not matrix.marker.exists()


def test_project_loaders_refuse_pickled_code(matrix, tmp_path):
    """The completion checkpoint reader and the training-checkpoint loader (weights_only=True) refuse a
    pickled object with a clear error; the code never runs."""
    from completion.network.checkpoint import read_original_checkpoint
    from splat.errors import StitchError

    with pytest.raises(StitchError, match="safely"):
        read_original_checkpoint(matrix.root / "models" / "pt" / "evil.pt")

    from completion.network.model import DepthCompletionModel
    from completion.training.checkpoints import load_checkpoint

    model = DepthCompletionModel.tiny()
    ckpt = tmp_path / "step_1"
    model.save_pretrained(ckpt / "model")
    torch.save({"optimizer": CodeOnUnpickle(matrix.marker), "step": 1}, ckpt / "trainer.pt")
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(StitchError, match=r"cannot be resumed .*Weights only load failed"):
        load_checkpoint(ckpt, model, opt, None, None)
    assert not matrix.marker.exists()
