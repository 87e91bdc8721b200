"""Training checkpoints in out_dir/checkpoints: save (atomically, keeping the newest few), find the latest,
restore for --resume, and tell whether a folder already holds a run."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import torch

from completion.training.config import TrainConfig, config_to_dict
from splat.errors import StitchError


def checkpoint_root(cfg: TrainConfig) -> Path:
    return Path(cfg.out_dir) / "checkpoints"


def save_checkpoint(cfg, model, opt, sched, scaler, step: int, epoch: int) -> Path:
    root = checkpoint_root(cfg)
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
    f = checkpoint_root(cfg) / "latest.json"
    if not f.is_file():
        return None
    try:
        name = json.loads(f.read_text(encoding="utf-8"))["dir"]
        if not isinstance(name, str) or "/" in name or "\\" in name or name in ("", ".", ".."):
            raise ValueError(f"'dir' is {name!r}, not a checkpoint folder name")
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise StitchError(f"{f} is damaged ({str(exc)[:200]}); delete it or start a new out_dir") from exc
    return checkpoint_root(cfg) / name


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


def existing_run(out: Path) -> int | None:
    """The step of the run already in `out` (checkpoint or final model), or None for a fresh folder."""
    latest = out / "checkpoints" / "latest.json"
    if latest.is_file():
        try:
            return int(json.loads(latest.read_text(encoding="utf-8"))["step"])
        except (ValueError, KeyError, TypeError):
            return 0
    return 0 if (out / "model").is_dir() or any((out / "checkpoints").glob("step-*")) else None
