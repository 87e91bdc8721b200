"""`stitch train ...`: data preparation and training of the depth completion network (thin wrappers)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

train_app = typer.Typer(
    help="Train the depth completion network: teacher depth, warped masks, fit.", no_args_is_help=True
)

_SHARDS = typer.Option(1, "--shards", help="Split the work into this many shards (jobs).")
_EXECUTOR = typer.Option(
    None, "--executor", help="inline | local (submitit, no SLURM) | slurm. Default: slurm with a partition, "
    "local for several shards, else inline."
)  # fmt: skip
_PARTITION = typer.Option(None, "--slurm-partition", help="Submit the shards as a SLURM job array here.")
_LOGS = typer.Option(Path("submitit_logs"), "--submitit-folder", help="submitit logs and pickles.")
_TIMEOUT = typer.Option(240, "--timeout-min", help="Per-shard time limit (minutes) on SLURM.")
_GPUS = typer.Option(0, "--gpus-per-node", help="GPUs per shard on SLURM.")
_NOWAIT = typer.Option(False, "--no-wait", help="Submit and return (print the job ids).")


def _opts(shards, executor, partition, folder, timeout, gpus, no_wait):
    from completion.shard import ShardOptions

    if executor is None:
        executor = "slurm" if partition else ("local" if shards > 1 else "inline")
    return ShardOptions(
        executor=executor,
        folder=str(folder),
        slurm_partition=partition,
        timeout_min=timeout,
        gpus_per_node=gpus,
        wait=not no_wait,
    )


def _report(results: list[dict]) -> None:
    written = sum(r.get("written", 0) for r in results)
    skipped = sum(r.get("skipped", 0) for r in results)
    typer.echo(
        json.dumps({"shards": len(results), "written": written, "skipped": skipped, "results": results})
    )


@train_app.command()
def teacher(
    images_dir: Path = typer.Argument(..., help="Folder of training images."),
    out_dir: Path = typer.Argument(..., help="Where STEM.npy|png + STEM.json go."),
    teacher_id: str = typer.Option(
        "marigold:prs-eth/marigold-depth-v1-1",
        "--teacher",
        help="transformers depth model id/folder, or marigold:ID for diffusers' MarigoldDepthPipeline.",
    ),
    fmt: str = typer.Option(
        "npy", "--format", help="npy (float32) | png16 (16-bit PNG + scale in the JSON)."
    ),
    device: str = typer.Option("auto", "--device"),
    relative_range: float = typer.Option(
        10.0, "--relative-range", help="Far/near ratio for relative teachers."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo finished files."),
    shards: int = _SHARDS,
    executor: str | None = _EXECUTOR,
    slurm_partition: str | None = _PARTITION,
    submitit_folder: Path = _LOGS,
    timeout_min: int = _TIMEOUT,
    gpus_per_node: int = _GPUS,
    no_wait: bool = _NOWAIT,
) -> None:
    """Predict teacher depth for every image (resumable: finished files are skipped)."""
    from completion.shard import run_shards
    from completion.teacher import TeacherJob

    jobs = [
        TeacherJob(
            str(images_dir), str(out_dir), teacher_id, fmt, k, shards, device, overwrite, relative_range
        )
        for k in range(shards)
    ]
    opts = _opts(shards, executor, slurm_partition, submitit_folder, timeout_min, gpus_per_node, no_wait)
    _report(run_shards(jobs, opts))


@train_app.command()
def masks(
    depth_dir: Path = typer.Argument(..., help="Teacher depth folder (from `stitch train teacher`)."),
    out_dir: Path = typer.Argument(..., help="Where STEM.png (255 = hole) + STEM.json go."),
    kind: str = typer.Option(
        "warped", "--kind", help="warped (the paper) | strokes (random, for the ablation)."
    ),
    renderer: str = typer.Option(
        "splat", "--renderer", help="splat (Gaussian renderer) | points (z-buffer)."
    ),
    yaw: float = typer.Option(15.0, "--yaw", help="Yaw ~ U[-yaw, yaw] degrees."),
    pitch: float = typer.Option(15.0, "--pitch", help="Pitch ~ U[-pitch, pitch] degrees."),
    dist_min: float = typer.Option(0.9, "--dist-min", help="Distance scale lower bound."),
    dist_max: float = typer.Option(1.1, "--dist-max", help="Distance scale upper bound."),
    max_side: int = typer.Option(256, "--max-side", help="Render masks at most this large (then upsample)."),
    min_hole: float = typer.Option(0.0, "--min-hole", help="Redraw cameras while the hole is smaller."),
    seed: int = typer.Option(0, "--seed"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo finished masks."),
    shards: int = _SHARDS,
    executor: str | None = _EXECUTOR,
    slurm_partition: str | None = _PARTITION,
    submitit_folder: Path = _LOGS,
    timeout_min: int = _TIMEOUT,
    gpus_per_node: int = _GPUS,
    no_wait: bool = _NOWAIT,
) -> None:
    """Warped disocclusion masks (or random strokes) for every finished depth map."""
    from completion.masks import MaskJob, WarpConfig
    from completion.shard import run_shards

    warp = WarpConfig(yaw, pitch, dist_min, dist_max, renderer, max_side, min_hole=min_hole)
    jobs = [
        MaskJob(str(depth_dir), str(out_dir), kind, k, shards, seed, overwrite, warp) for k in range(shards)
    ]
    opts = _opts(shards, executor, slurm_partition, submitit_folder, timeout_min, gpus_per_node, no_wait)
    _report(run_shards(jobs, opts))


@train_app.command()
def fit(
    config: Path = typer.Argument(..., help="Training config JSON (see completion/train.py TrainConfig)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in out_dir."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Override the config's step budget."),
    out_dir: Path | None = typer.Option(None, "--out-dir", help="Override the config's out_dir."),
) -> None:
    """Train (one process; for several use `torchrun --nproc_per_node N -m completion.train CONFIG`)."""
    import dataclasses

    from completion.train import fit as run_fit
    from completion.train import load_config

    cfg = load_config(config)
    if max_steps is not None:
        cfg = dataclasses.replace(cfg, max_steps=max_steps)
    if out_dir is not None:
        cfg = dataclasses.replace(cfg, out_dir=str(out_dir))
    res = run_fit(cfg, resume=resume)
    typer.echo(json.dumps(res))
