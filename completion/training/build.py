"""What the loop trains with: the model to start from, its optimiser (slow encoder group), the OneCycle
schedule and the mixed-precision dtype."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from completion.network.config import MODEL_TYPE
from completion.network.model import DepthCompletionModel
from completion.training.config import AMP_MODES, TrainConfig
from splat.errors import StitchError


def build_model(cfg: TrainConfig) -> DepthCompletionModel:
    size = tuple(cfg.net_size) if cfg.net_size is not None else None
    if cfg.model == "tiny":
        return DepthCompletionModel.tiny(seed=cfg.seed, net_size=size, **cfg.model_kwargs)
    if cfg.model == "paper":
        torch.manual_seed(cfg.seed)
        return DepthCompletionModel(DepthCompletionModel.paper_config(net_size=size or tuple(cfg.data.size)))
    p = Path(cfg.model).expanduser()
    if not p.exists():  # a hub id / registry key: resolved locally (model path, cache), never downloaded
        from engine.backends.models import resolve

        p = Path(resolve(cfg.model, kind="transformers-depth", model_path=cfg.model_path or None).path)
    cfg_file = p / "config.json"
    if not cfg_file.is_file():
        raise StitchError(f"model {cfg.model!r}: {p} has no config.json; give a stitch or ZoeDepth folder")
    try:
        model_type = json.loads(cfg_file.read_text(encoding="utf-8")).get("model_type")
    except json.JSONDecodeError as exc:
        raise StitchError(f"{cfg_file} is not valid JSON ({exc})") from exc
    if model_type == MODEL_TYPE:
        return DepthCompletionModel.from_pretrained(p).train()
    if model_type == "zoedepth":
        return DepthCompletionModel.from_monocular(str(p), net_size=size or tuple(cfg.data.size)).train()
    raise StitchError(
        f"model {cfg.model!r} is a {model_type!r} model; training starts from a stitch completion folder or "
        "a transformers ZoeDepth model (e.g. Intel/zoedepth-nyu-kitti)"
    )


def freeze_unused(model: DepthCompletionModel, device: torch.device) -> list[str]:
    """Freeze parameters the forward pass never uses (transformers' first fusion layer has a residual unit it
    skips): found by one small probe pass. DDP then needs no find_unused_parameters, and one process and
    several processes update exactly the same parameters."""
    m = model.size_multiple
    x = torch.rand(1, 3, 2 * m, 2 * m, device=device)
    d = torch.rand(1, 1, 2 * m, 2 * m, device=device)
    model.zero_grad(set_to_none=True)
    model(x, d, d > 0.5).mean().backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    for n, p in model.named_parameters():
        if n in unused:
            p.requires_grad_(False)
    model.zero_grad(set_to_none=True)
    return unused


def slow_parameters(model: DepthCompletionModel, recipe: str) -> list[torch.nn.Parameter]:
    """Parameters trained at lr / encoder_lr_factor: the backbone; the release adds the DPT reassemble layers
    (its `get_lr_params` puts `core.core.pretrained` -- BEiT and act_postprocess -- in the slow group)."""
    slow = list(model.encoder_parameters())
    if recipe == "release":
        reassemble = getattr(getattr(model.zoe, "neck", None), "reassemble_stage", None)
        if reassemble is not None:
            slow += list(reassemble.parameters())
    return slow


def group_lrs(cfg: TrainConfig, opt: torch.optim.Optimizer) -> list[float]:
    return [
        cfg.lr / cfg.encoder_lr_factor if g.get("name") == "encoder" else cfg.lr for g in opt.param_groups
    ]


def build_optimizer(model: DepthCompletionModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    slow_ids = {id(p) for p in slow_parameters(model, cfg.recipe)}
    enc = [p for p in model.parameters() if p.requires_grad and id(p) in slow_ids]
    dec = [p for p in model.parameters() if p.requires_grad and id(p) not in slow_ids]
    groups = [
        {"params": enc, "lr": cfg.lr / cfg.encoder_lr_factor, "name": "encoder"},
        {"params": dec, "lr": cfg.lr, "name": "decoder"},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    return torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=[g["lr"] for g in opt.param_groups],
        total_steps=max(total_steps, 1),
        pct_start=cfg.pct_start,
        div_factor=cfg.div_factor,
        final_div_factor=cfg.final_div_factor,
        cycle_momentum=True,
        base_momentum=0.85,
        max_momentum=0.95,
    )


def resolve_amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or cfg.amp == "off":
        return None
    if cfg.amp == "fp16":
        return torch.float16
    if cfg.amp == "bf16":
        return torch.bfloat16
    if cfg.amp != "auto":
        raise StitchError(f"unknown amp {cfg.amp!r}; use {', '.join(AMP_MODES)}")
    # Native bf16 only (Ampere and later): counting emulation would pick slow, emulated bf16 on a V100/T4.
    return torch.bfloat16 if _bf16_native() else torch.float16


def _bf16_native() -> bool:
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch without the keyword: compute capability 8.0+ has bf16 units
        return torch.cuda.get_device_capability()[0] >= 8
