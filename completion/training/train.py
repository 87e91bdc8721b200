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

This module is the loop and its entry point; beside it: config.py (TrainConfig), build.py (model, optimiser,
schedule, mixed precision), distributed.py (process group, batch order), checkpoints.py and log.py.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from completion.training.build import (
    build_model,
    build_optimizer,
    build_scheduler,
    freeze_unused,
    group_lrs,
    resolve_amp_dtype,
)
from completion.training.checkpoints import (
    checkpoint_root,
    existing_run,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from completion.training.config import TrainConfig, effective_config, load_config
from completion.training.data import CompletionDataset
from completion.training.distributed import StepSampler, global_mean, init_distributed, process_device
from completion.training.log import append_log, last_logged_loss, plot_curves, truncate_log
from completion.training.losses import completion_loss
from splat.errors import StitchError


def _resolve_device(name: str) -> torch.device:
    from engine.device import resolve_device

    return resolve_device(name)  # auto honours STITCH_DEVICE; an explicit cuda:N is kept


def fit(cfg: TrainConfig, resume: bool | str = False) -> dict:
    """Train; returns {"step", "final_loss", "first_loss", "val", "out_dir", "status"} (on every rank).

    resume: False (a fresh run; refuses a folder holding one), True (continue the latest checkpoint) or
    "auto" (continue when there is a checkpoint, else start: what a requeued cluster job does)."""
    cfg = effective_config(cfg)
    device = _resolve_device(cfg.device)
    info = init_distributed(device)
    if device.type == "cuda":
        device = process_device(device, info)
        torch.cuda.set_device(device)
    out = Path(cfg.out_dir)
    existing = existing_run(out)
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
    amp_dtype = resolve_amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    step = 0
    extended = False
    if resume:
        ck = latest_checkpoint(cfg)
        if ck is None:
            raise StitchError(f"--resume: no checkpoint in {checkpoint_root(cfg)}; start without --resume")

        def rebuild(at: int) -> None:
            nonlocal sched, extended
            if at >= total:
                return  # finished for this budget too: nothing to schedule
            for g in opt.param_groups:  # let OneCycle recompute its bounds for the new total
                for k in ("initial_lr", "max_lr", "min_lr"):
                    g.pop(k, None)
            for g, lr in zip(opt.param_groups, group_lrs(cfg, opt), strict=True):
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
            loss = last_logged_loss(out / "log.csv")
            msg = (
                f"{out} already finished at step {step} (budget {total}); raise --max-steps to train further"
            )
            return {"step": step, "first_loss": loss, "final_loss": loss, "val": {}, "out_dir": str(out),
                    "status": "already finished", "message": msg}  # fmt: skip
        if info.main:
            truncate_log(out / "log.csv", step)
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
            last_loss, si, mse = global_mean(parts_now, info, device)
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
                append_log(out / "log.csv", row)
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
