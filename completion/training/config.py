"""The training config: `TrainConfig`, its recipes and bounds, read from JSON with one-line errors."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from completion.training.data import DataConfig
from splat.errors import StitchError


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    out_dir: str = "runs/completion"
    model: str = (
        "tiny"  # "tiny" | "paper" (random ZoeD-N sized) | a save_pretrained folder | a ZoeDepth hub id
    )
    net_size: tuple[int, int] | None = None  # network resolution for new models (None: the crop size)
    model_kwargs: dict = field(default_factory=dict)  # "tiny" only: hidden, layers, patch, n_bins
    batch_size: int = 12  # per process
    epochs: int = 5
    max_steps: int | None = None  # overrides epochs when set
    lr: float = 1.61e-4
    weight_decay: float = 0.01
    encoder_lr_factor: float = 10.0  # backbone lr = lr / factor
    pct_start: float = 0.7
    div_factor: float = 1.0
    final_div_factor: float = 1e4
    grad_clip: float = 0.1
    w_silog: float = 1.0
    w_known: float = 1.0
    silog_lambda: float = 0.85
    amp: str = "auto"  # "auto" (bf16/fp16 on CUDA, off on CPU) | "off" | "bf16" | "fp16"
    device: str = "auto"
    num_workers: int = 0
    seed: int = 0
    log_every: int = 1
    ckpt_every: int = 500
    keep_checkpoints: int = 2
    val_every: int = 500
    val_rgbd: str = ""  # held-out RGB-D folder for the benchmark metric ("" = no validation)
    val_max_pairs: int = 4
    val_gap: int | None = None
    val_renderer: str = (
        "auto"  # partial depth for validation: auto/splat (Gaussians) | points (fast z-buffer)
    )
    recipe: str = "stitch"  # "stitch" (ours) | "release" (the release's trainer; see the module doc)
    model_path: str = ""  # models root for `model` hub ids (--model-path; STITCH_MODEL_PATH also read)


RECIPES = ("stitch", "release")


def effective_config(cfg: TrainConfig) -> TrainConfig:
    """The config the loop runs: `recipe: release` switches the data options to the release's."""
    if cfg.recipe not in RECIPES:
        raise StitchError(f"recipe must be one of {', '.join(RECIPES)}, got {cfg.recipe!r}")
    if cfg.recipe == "release":
        data = dataclasses.replace(cfg.data, augment="release", rescale_mode="uniform")
        return dataclasses.replace(cfg, data=data)
    return cfg


def config_from_dict(d: dict) -> TrainConfig:
    """TrainConfig from a JSON-like dict; unknown keys are errors (typos would silently do nothing), and so
    are values of the wrong type or range (engine.typed: one line naming the field, not a traceback)."""
    from engine.typed import from_dict

    if not isinstance(d, dict):
        raise StitchError(f"training config must be a JSON object, got {type(d).__name__}")
    d = dict(d)
    data = d.pop("data", {})
    if not isinstance(data, dict):
        raise StitchError(f"training config: data must be an object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    bad = sorted(set(d) - known)
    dknown = {f.name for f in dataclasses.fields(DataConfig)}
    bad += [f"data.{k}" for k in sorted(set(data) - dknown)]
    if bad:
        raise StitchError(
            f"unknown training config keys {bad}; see completion/training/config.py TrainConfig"
        )
    cfg = from_dict(TrainConfig, {**d, "data": data}, "training config", TRAIN_BOUNDS)
    if not (cfg.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", cfg.device)):
        raise StitchError(f"training config: unknown device {cfg.device!r}; use auto, cpu, cuda or cuda:N")
    if cfg.amp not in AMP_MODES:
        raise StitchError(f"training config: unknown amp {cfg.amp!r}; use {', '.join(AMP_MODES)}")
    return cfg


AMP_MODES = ("auto", "off", "bf16", "fp16")


# Ranges checked when a training config is read (engine.typed.from_dict).
TRAIN_BOUNDS = {
    "batch_size": (1, 4096),
    "epochs": (1, None),
    "max_steps": (1, None),
    "lr": (1e-12, 10.0),
    "weight_decay": (0.0, None),
    "encoder_lr_factor": (1e-6, None),
    "grad_clip": (0.0, None),
    "num_workers": (0, 256),
    "seed": (0, 2**32 - 1),
    "log_every": (1, None),
    "ckpt_every": (1, None),
    "keep_checkpoints": (1, None),
    "val_every": (1, None),
    "val_max_pairs": (1, None),
    "data.size[0]": (8, 8192),
    "data.size[1]": (8, 8192),
    "data.mono_prob": (0.0, 1.0),
}


def load_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise StitchError(f"training config {path} does not exist; write a JSON file (see README, Training)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, huge ints, deep nesting
        raise StitchError(f"training config {path} is not valid JSON ({str(exc)[:200]})") from exc
    return config_from_dict(raw)


def config_to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)
