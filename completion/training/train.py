"""Training loop for the depth completion network (`stitch train fit CONFIG`; torchrun for several processes).

Recipe (PAPER-NOTES / the release's ZoeDepth config): AdamW lr 1.61e-4, weight decay 0.01, encoder (backbone)
lr / 10, OneCycle (pct_start 0.7, div_factor 1, final_div_factor 1e4, momentum cycling), grad clipping 0.1,
SILog (lambda 0.85, x10) + known-pixel MSE, batch 12, 5 epochs; mixed precision on CUDA.

Distributed: `torchrun --nproc_per_node N -m completion.training.train C.json` runs DDP (NCCL on GPU, gloo on
CPU). `batch_size` is per process; global step g uses samples [g*B*N, (g+1)*B*N) of the epoch's seeded
permutation, rank r taking its r-th share, so N processes with batch B follow the same trajectory as one
process with batch B*N.

Output folder:
  checkpoints/step-0000100/{model/ (config.json + model.safetensors), trainer.pt, trainer.json}
  checkpoints/latest.json   {"step": 100, "dir": "step-0000100"}
  model/                    the final weights (load with DepthCompletionModel.from_pretrained / --depth PATH)
  log.csv, curves.png       loss, lr, grad norm and validation MAE per step
`--resume` reloads the latest checkpoint (weights, optimiser, scheduler, grad scaler, step) and continues
from the same step with the same data order; log rows after that step are dropped (no duplicates). On a
finished run it says so and returns; with a larger step budget it continues, the OneCycle schedule rebuilt
for the new total and fast-forwarded to the checkpoint's step. Without --resume a folder that already holds a
run is refused (its checkpoints would be mixed with the new run's).

Recipes: `recipe: "stitch"` (default) is ours; `recipe: "release"` reproduces the release's trainer:
SILog pooled over all valid pixels of the batch (ours: per sample, then averaged), known-pixel MSE as the mean
over all pixels x mask (ours: normalised by the known count), BEiT *and* the DPT reassemble layers at lr/10
(ours: the backbone only), targets rescaled uniformly in [min/dmin, max/dmax] and flip + gamma/brightness/
colour augmentation without crops (data.rescale_mode / data.augment). Like the release, the output is not
capped (completion/network/model.py keeps only a positivity floor).
Model initialisation (`model`): "tiny", "paper" (random ZoeD-N), a stitch save_pretrained folder, a
transformers ZoeDepth folder, or a ZoeDepth hub id / registry key found through `model_path` (--model-path),
STITCH_MODEL_PATH or the Hugging Face cache (engine.backends.models.resolve; nothing is downloaded).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import pickle
import re
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from completion.network.model import DepthCompletionModel
from completion.training.data import CompletionDataset, DataConfig
from completion.training.losses import completion_loss
from splat.errors import StitchError

LOG_FIELDS = ("step", "epoch", "loss", "silog", "known_mse", "lr", "grad_norm", "val_mae", "seconds")


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


def _to_tuple(v):
    return tuple(v) if isinstance(v, list) else v


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
        raise StitchError(f"unknown training config keys {bad}; see completion/training/train.py TrainConfig")
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


# --- distributed ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group that torchrun (or a test) describes in env vars; no-op if WORLD_SIZE <= 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


class StepSampler(Sampler[list[int]]):
    """Batches for one rank from `start` on: global batch g = perm[g*B*W : (g+1)*B*W], rank r takes
    [r*B : (r+1)*B] of it. The permutation is seeded by (seed, epoch), wrapped to fill the last batch."""

    def __init__(self, n: int, batch: int, info: DistInfo, seed: int, epoch: int, start: int = 0) -> None:
        self.n, self.batch, self.info, self.seed, self.epoch, self.start = n, batch, info, seed, epoch, start

    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.n / (self.batch * self.info.world)))

    def __len__(self) -> int:
        return self.steps_per_epoch() - self.start

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        gb = self.batch * self.info.world
        total = self.steps_per_epoch() * gb
        perm = (perm * (total // self.n + 1))[:total]
        for step in range(self.start, self.steps_per_epoch()):
            lo = step * gb + self.info.rank * self.batch
            yield perm[lo : lo + self.batch]


# --- model, optimiser, schedule ------------------------------------------------------------------


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
    from completion.network.model import MODEL_TYPE

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


def _group_lrs(cfg: TrainConfig, opt: torch.optim.Optimizer) -> list[float]:
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


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
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


# --- checkpoints ---------------------------------------------------------------------------------


def _ckpt_root(cfg: TrainConfig) -> Path:
    return Path(cfg.out_dir) / "checkpoints"


def save_checkpoint(cfg, model, opt, sched, scaler, step: int, epoch: int) -> Path:
    root = _ckpt_root(cfg)
    name = f"step-{step:07d}"
    tmp = root / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp / "model")
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step, "epoch": epoch}
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    torch.save(state, tmp / "trainer.pt")
    (tmp / "trainer.json").write_text(
        json.dumps({"step": step, "epoch": epoch, "config": config_to_dict(cfg)}, indent=1), encoding="utf-8"
    )
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    (root / ".latest.tmp").write_text(json.dumps({"step": step, "dir": name}), encoding="utf-8")
    os.replace(root / ".latest.tmp", root / "latest.json")
    ckpts = sorted(p for p in root.glob("step-*") if p.is_dir() and p != final)
    for old in ckpts[: max(0, len(ckpts) - max(cfg.keep_checkpoints - 1, 0))]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(cfg: TrainConfig) -> Path | None:
    f = _ckpt_root(cfg) / "latest.json"
    if not f.is_file():
        return None
    try:
        name = json.loads(f.read_text(encoding="utf-8"))["dir"]
        if not isinstance(name, str) or "/" in name or "\\" in name or name in ("", ".", ".."):
            raise ValueError(f"'dir' is {name!r}, not a checkpoint folder name")
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise StitchError(f"{f} is damaged ({str(exc)[:200]}); delete it or start a new out_dir") from exc
    return _ckpt_root(cfg) / name


def load_checkpoint(path: Path, model, opt, sched, scaler, rebuild=None) -> int:
    """Restore weights, optimiser, scheduler and scaler; returns the step. `rebuild(step)`, when given and
    the saved schedule was made for another total, replaces the scheduler with one fast-forwarded to step."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path / "model" / "model.safetensors"))
        model.load_state_dict(state, strict=True)
        # weights_only refuses pickled code; a refusal or a damaged file becomes one clear line.
        tr = torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError, SafetensorError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise StitchError(
            f"checkpoint {path} cannot be resumed ({first}); start without --resume or restore it"
        ) from exc
    opt.load_state_dict(tr["optimizer"])
    saved_total = tr["scheduler"].get("total_steps")
    if rebuild is not None and saved_total is not None and saved_total != getattr(sched, "total_steps", None):
        rebuild(int(tr["step"]))
    else:
        sched.load_state_dict(tr["scheduler"])
    if scaler is not None and "scaler" in tr:
        scaler.load_state_dict(tr["scaler"])
    return int(tr["step"])


# --- logging -------------------------------------------------------------------------------------


def _append_log(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in LOG_FIELDS})


def _truncate_log(path: Path, step: int) -> None:
    """Keep the rows up to `step` (the resumed checkpoint): the steps after it are about to be redone."""
    if not path.exists():
        return
    rows = [r for r in read_log(path) if (r.get("step") or "").isdigit() and int(r["step"]) <= step]
    tmp = path.with_name(".log.csv.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in LOG_FIELDS})
    os.replace(tmp, path)


def read_log(path: str | Path) -> list[dict]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def plot_curves(log_csv: Path, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_csv)
    steps = [int(r["step"]) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    val = [(int(r["step"]), float(r["val_mae"])) for r in rows if r["val_mae"] not in ("", "nan")]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    ax[0].plot(steps, loss, lw=1)
    ax[0].set(xlabel="step", ylabel="training loss", yscale="log", title="loss (SILog + known MSE)")
    if val:
        ax[1].plot(*zip(*val, strict=True), marker="o")
    ax[1].set(xlabel="step", ylabel="MAE (m), uncovered pixels", title="validation (geometry benchmark)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


# --- the loop ------------------------------------------------------------------------------------


def _resolve_device(name: str) -> torch.device:
    from engine.device import resolve_device

    return resolve_device(name)  # auto honours STITCH_DEVICE; an explicit cuda:N is kept


def _process_device(device: torch.device, info: DistInfo) -> torch.device:
    """torchrun: one GPU per local rank. One process: the device asked for (an explicit cuda:1 stays 1)."""
    if device.type != "cuda":
        return device
    index = info.local_rank if info.world > 1 else device.index
    return torch.device("cuda", index if index is not None else torch.cuda.current_device())


def _existing_run(out: Path) -> int | None:
    """The step of the run already in `out` (checkpoint or final model), or None for a fresh folder."""
    latest = out / "checkpoints" / "latest.json"
    if latest.is_file():
        try:
            return int(json.loads(latest.read_text(encoding="utf-8"))["step"])
        except (ValueError, KeyError, TypeError):
            return 0
    return 0 if (out / "model").is_dir() or any((out / "checkpoints").glob("step-*")) else None


def _last_logged_loss(log_csv: Path) -> float:
    try:
        rows = read_log(log_csv)
    except OSError:
        return float("nan")
    return float(rows[-1]["loss"]) if rows else float("nan")


def _global_mean(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """Mean over ranks (equal shares of the global batch): what one process on the whole batch logs."""
    if info.world <= 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / info.world).tolist()


def fit(cfg: TrainConfig, resume: bool | str = False) -> dict:
    """Train; returns {"step", "final_loss", "first_loss", "val", "out_dir", "status"} (on every rank).

    resume: False (a fresh run; refuses a folder holding one), True (continue the latest checkpoint) or
    "auto" (continue when there is a checkpoint, else start: what a requeued cluster job does)."""
    cfg = effective_config(cfg)
    device = _resolve_device(cfg.device)
    info = init_distributed(device)
    if device.type == "cuda":
        device = _process_device(device, info)
        torch.cuda.set_device(device)
    out = Path(cfg.out_dir)
    existing = _existing_run(out)
    if resume == "auto":
        resume = latest_checkpoint(cfg) is not None
    if not resume and existing is not None:
        raise StitchError(
            f"{out} already holds a training run (step {existing}); pass --resume to continue it "
            "(or a larger --max-steps to extend it), or choose another out_dir"
        )
    if info.main:
        out.mkdir(parents=True, exist_ok=True)

    dataset = CompletionDataset(cfg.data)
    probe = StepSampler(len(dataset), cfg.batch_size, info, cfg.seed, 0)
    spe = probe.steps_per_epoch()
    total = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * spe
    if total < 1:
        raise StitchError("training needs at least one step: set epochs >= 1 or max_steps >= 1")

    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device).train()
    freeze_unused(model, device)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total)
    amp_dtype = _amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    step = 0
    extended = False
    if resume:
        ck = latest_checkpoint(cfg)
        if ck is None:
            raise StitchError(f"--resume: no checkpoint in {_ckpt_root(cfg)}; start without --resume")

        def rebuild(at: int) -> None:
            nonlocal sched, extended
            if at >= total:
                return  # finished for this budget too: nothing to schedule
            for g in opt.param_groups:  # let OneCycle recompute its bounds for the new total
                for k in ("initial_lr", "max_lr", "min_lr"):
                    g.pop(k, None)
            for g, lr in zip(opt.param_groups, _group_lrs(cfg, opt), strict=True):
                g["lr"] = lr
            sched = build_scheduler(opt, cfg, total)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "step() before optimizer.step()": an intended fast-forward
                for _ in range(at):
                    sched.step()
            extended = True

        step = load_checkpoint(ck, model, opt, sched, scaler, rebuild=rebuild)
        if step >= total:
            if info.world > 1:
                dist.barrier()
            loss = _last_logged_loss(out / "log.csv")
            msg = (
                f"{out} already finished at step {step} (budget {total}); raise --max-steps to train further"
            )
            return {"step": step, "first_loss": loss, "final_loss": loss, "val": {}, "out_dir": str(out),
                    "status": "already finished", "message": msg}  # fmt: skip
        if info.main:
            _truncate_log(out / "log.csv", step)
    resumed_from = step

    net = model
    if info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=ids)

    val_samples = []
    if cfg.val_rgbd and info.main:
        from completion.training.evaluate import rgbd_val_samples

        val_samples = rgbd_val_samples(
            cfg.val_rgbd, cfg.val_max_pairs, cfg.val_gap, renderer=cfg.val_renderer, seed=cfg.seed
        )

    pooled = cfg.recipe == "release"
    first_loss = last_loss = float("nan")
    val_scores: dict = {}
    t0 = time.perf_counter()
    while step < total:
        epoch, in_epoch = divmod(step, spe)
        dataset.set_epoch(epoch)
        sampler = StepSampler(len(dataset), cfg.batch_size, info, cfg.seed, epoch, start=in_epoch)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers)
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                pred = net(batch["rgb"], batch["sparse"], batch["known"])
            loss, parts = completion_loss(
                pred.float(), batch, w_silog=cfg.w_silog, w_known=cfg.w_known, lam=cfg.silog_lambda,
                pooled=pooled,
            )  # fmt: skip
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            lr_used = opt.param_groups[-1]["lr"]
            step += 1
            if step < total:  # OneCycle is defined for exactly `total` steps
                sched.step()
            # the global batch's loss (all ranks), as one process on the whole batch would log it
            parts_now = [float(loss.detach()), parts["silog"], parts["known_mse"]]
            last_loss, si, mse = _global_mean(parts_now, info, device)
            if math.isnan(first_loss):
                first_loss = last_loss
            row = {
                "step": step,
                "epoch": epoch,
                "loss": f"{last_loss:.6g}",
                "silog": f"{si:.6g}",
                "known_mse": f"{mse:.6g}",
                "lr": f"{lr_used:.6g}",
                "grad_norm": f"{float(gn):.6g}",
                "seconds": f"{time.perf_counter() - t0:.3f}",
            }
            if val_samples and (step % cfg.val_every == 0 or step == total):
                from completion.training.evaluate import validate

                val_scores = validate(model, val_samples)
                row["val_mae"] = f"{val_scores['mae']:.6g}"
            if info.main and (step % cfg.log_every == 0 or "val_mae" in row or step == total):
                _append_log(out / "log.csv", row)
            if info.main and (step % cfg.ckpt_every == 0 or step == total):
                save_checkpoint(cfg, model, opt, sched, scaler, step, epoch)
            if step >= total:
                break
    if info.main:
        model.save_pretrained(out / "model")
        if (out / "log.csv").exists():
            plot_curves(out / "log.csv", out / "curves.png")
    if info.world > 1:
        dist.barrier()
    return {
        "step": step,
        "first_loss": first_loss,
        "final_loss": last_loss,
        "val": val_scores,
        "out_dir": str(out),
        "status": "extended" if extended else ("resumed" if resumed_from else "trained"),
        "resumed_from": resumed_from,
    }


def main(argv: list[str] | None = None) -> None:
    """`python -m completion.training.train CONFIG.json [--resume]` (the entry point for torchrun)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(
        description="Train the depth completion network (see completion/training/train.py)."
    )
    ap.add_argument("config")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    try:
        res = fit(load_config(args.config), resume=args.resume)
    except StitchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: v for k, v in res.items() if k != "val"} | {"val": res["val"]}))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
