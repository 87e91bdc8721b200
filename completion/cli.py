"""`stitch train ...`: data preparation and training of the depth completion network (thin wrappers)."""

from __future__ import annotations

import dataclasses
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
_PARTITION = typer.Option(
    None, "--slurm-partition", help="Submit to SLURM (through submitit) on this partition."
)
_LOGS = typer.Option(Path("submitit_logs"), "--submitit-folder", help="submitit logs and pickles.")
_TIMEOUT = typer.Option(240, "--timeout-min", help="Time limit per job (minutes) on SLURM; requeued after.")
_GPUS = typer.Option(0, "--gpus-per-node", help="GPUs per node (per shard for data preparation) on SLURM.")
_CPUS = typer.Option(8, "--cpus-per-task", help="CPUs per task on SLURM.")
_MEM = typer.Option(None, "--mem-gb", help="Memory per node (GB) on SLURM.")
_ACCOUNT = typer.Option(None, "--account", help="SLURM account.")
_QOS = typer.Option(None, "--qos", help="SLURM quality of service.")
_CONSTRAINT = typer.Option(None, "--constraint", help="SLURM node constraint (e.g. a100).")
_SETUP = typer.Option(
    None, "--setup", help="Shell line run before the job (repeatable): module load, venv..."
)
_NOWAIT = typer.Option(False, "--no-wait", help="Submit and return (print the job ids).")
_LAYOUT = typer.Option(
    "auto",
    "--layout",
    help="folder | nyu-mat | nyu-sync | places365 (auto: .mat -> nyu-mat, else folder tree).",
)
_SPLIT_FILE = typer.Option(
    None, "--split-file", help="splits.mat (nyu-mat), BTS split .txt (nyu-sync), Places365 file list."
)
_SPLIT = typer.Option("train", "--split", help="nyu-mat: train | test half of splits.mat.")
_BORDER = typer.Option(None, "--border", help="Pixels cut from each side (default 8 for NYU: white border).")


def _opts(shards, executor, partition, folder, timeout, gpus, no_wait, cpus=8, mem=None, account=None,
          qos=None, constraint=None, setup=None):  # fmt: skip
    from completion.training.shard import ShardOptions

    if executor is None:
        executor = "slurm" if partition else ("local" if shards > 1 else "inline")
    return ShardOptions(
        executor=executor,
        folder=str(Path(folder).absolute()),
        slurm_partition=partition,
        timeout_min=timeout,
        gpus_per_node=gpus,
        cpus_per_task=cpus,
        mem_gb=mem or 16,
        wait=not no_wait,
        account=account,
        qos=qos,
        constraint=constraint,
        setup=tuple(setup or ()),
    )


def _report(results: list[dict]) -> None:
    written = sum(r.get("written", 0) for r in results)
    skipped = sum(r.get("skipped", 0) for r in results)
    typer.echo(
        json.dumps({"shards": len(results), "written": written, "skipped": skipped, "results": results})
    )


@train_app.command()
def teacher(
    images_dir: Path = typer.Argument(
        ...,
        help="Training images: a folder tree, nyu_depth_v2_labeled.mat, a BTS sync root, Places data_256.",
    ),
    out_dir: Path = typer.Argument(..., help="Where ID.npy|png + ID.json go."),
    teacher_id: str = typer.Option(
        "marigold:prs-eth/marigold-depth-v1-1",
        "--teacher",
        help="transformers depth model id/folder, marigold:ID (diffusers' MarigoldDepthPipeline), or gt "
        "(the dataset's own depth: NYU).",
    ),
    fmt: str = typer.Option(
        "npy", "--format", help="npy (float32) | png16 (16-bit PNG + scale in the JSON)."
    ),
    device: str = typer.Option("auto", "--device"),
    relative_range: float = typer.Option(
        10.0, "--relative-range", help="Far/near ratio for relative teachers without ground truth."
    ),
    align: str = typer.Option(
        "auto",
        "--align",
        help="auto: fit relative teachers to the dataset's depth where it has some | range.",
    ),
    steps: int | None = typer.Option(
        None, "--marigold-steps", help="Marigold denoising steps (default: its own)."
    ),
    ensemble: int = typer.Option(
        1, "--marigold-ensemble", help="Marigold ensemble size (paper-quality: 10)."
    ),
    layout: str = _LAYOUT,
    split_file: Path | None = _SPLIT_FILE,
    split: str = _SPLIT,
    border: int | None = _BORDER,
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo finished files."),
    shards: int = _SHARDS,
    executor: str | None = _EXECUTOR,
    slurm_partition: str | None = _PARTITION,
    submitit_folder: Path = _LOGS,
    timeout_min: int = _TIMEOUT,
    gpus_per_node: int = _GPUS,
    cpus_per_task: int = _CPUS,
    mem_gb: int | None = _MEM,
    account: str | None = _ACCOUNT,
    qos: str | None = _QOS,
    constraint: str | None = _CONSTRAINT,
    setup: list[str] | None = _SETUP,
    no_wait: bool = _NOWAIT,
) -> None:
    """Predict teacher depth for every image (resumable: finished files are skipped)."""
    from completion.training.shard import run_shards
    from completion.training.sources import SourceSpec
    from completion.training.teacher import TeacherJob

    src = SourceSpec(
        str(images_dir.absolute()), layout, str(split_file.absolute()) if split_file else "", split, border
    )
    jobs = [
        TeacherJob(
            str(images_dir.absolute()), str(out_dir.absolute()), teacher_id, fmt, k, shards, device,
            overwrite, relative_range, src, steps, ensemble, align,
        )
        for k in range(shards)
    ]  # fmt: skip
    opts = _opts(shards, executor, slurm_partition, submitit_folder, timeout_min, gpus_per_node, no_wait,
                 cpus_per_task, mem_gb, account, qos, constraint, setup)  # fmt: skip
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
    pivot: float | None = typer.Option(
        None, "--pivot", help="Orbit pivot depth (default: the median depth; the release: 1)."
    ),
    snap_depth: float | None = typer.Option(
        None, "--snap-depth", help="Clip depth to this before warping (the release: 15)."
    ),
    seed: int = typer.Option(0, "--seed"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo finished masks."),
    shards: int = _SHARDS,
    executor: str | None = _EXECUTOR,
    slurm_partition: str | None = _PARTITION,
    submitit_folder: Path = _LOGS,
    timeout_min: int = _TIMEOUT,
    gpus_per_node: int = _GPUS,
    cpus_per_task: int = _CPUS,
    mem_gb: int | None = _MEM,
    account: str | None = _ACCOUNT,
    qos: str | None = _QOS,
    constraint: str | None = _CONSTRAINT,
    setup: list[str] | None = _SETUP,
    no_wait: bool = _NOWAIT,
) -> None:
    """Warped disocclusion masks (or random strokes) for every finished depth map."""
    from completion.training.masks import MaskJob, WarpConfig
    from completion.training.shard import run_shards

    warp = WarpConfig(
        yaw,
        pitch,
        dist_min,
        dist_max,
        renderer,
        max_side,
        min_hole=min_hole,
        pivot=pivot,
        snap_depth=snap_depth,
    )
    jobs = [
        MaskJob(str(depth_dir.absolute()), str(out_dir.absolute()), kind, k, shards, seed, overwrite, warp)
        for k in range(shards)
    ]
    opts = _opts(shards, executor, slurm_partition, submitit_folder, timeout_min, gpus_per_node, no_wait,
                 cpus_per_task, mem_gb, account, qos, constraint, setup)  # fmt: skip
    _report(run_shards(jobs, opts))


@train_app.command()
def fit(
    config: Path = typer.Argument(
        ..., help="Training config JSON (see completion/training/config.py TrainConfig)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in out_dir."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Override the config's step budget."),
    out_dir: Path | None = typer.Option(None, "--out-dir", help="Override the config's out_dir."),
    model_path: Path | None = typer.Option(
        None, "--model-path", help="Models root for a ZoeDepth hub id in `model` (also STITCH_MODEL_PATH)."
    ),
    slurm_partition: str | None = _PARTITION,
    nodes: int = typer.Option(1, "--nodes", help="SLURM nodes (multi-node DDP)."),
    gpus_per_node: int = typer.Option(1, "--gpus-per-node", help="GPUs (= DDP processes) per node on SLURM."),
    cpus_per_task: int = _CPUS,
    mem_gb: int | None = _MEM,
    timeout_min: int = typer.Option(
        24 * 60, "--timeout-min", help="Job time limit (minutes); requeued after."
    ),
    account: str | None = _ACCOUNT,
    qos: str | None = _QOS,
    constraint: str | None = _CONSTRAINT,
    setup: list[str] | None = _SETUP,
    submitit_folder: Path = _LOGS,
    wait: bool = typer.Option(False, "--wait", help="Cluster: block until the job ends."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Cluster: print the sbatch script, submit nothing."
    ),
) -> None:
    """Train (one process; several: torchrun -m completion.training.train CONFIG; a SLURM cluster:
    --slurm-partition P --nodes N --gpus-per-node G, through submitit, requeued on preemption)."""
    from completion.training.config import config_to_dict, load_config

    cfg = load_config(config)
    changes: dict = {}
    if max_steps is not None:
        changes["max_steps"] = max_steps
    if out_dir is not None:
        changes["out_dir"] = str(out_dir)
    if model_path is not None:
        changes["model_path"] = str(model_path)
    cfg = dataclasses.replace(cfg, **changes)
    if slurm_partition is None:
        from completion.training.train import fit as run_fit

        res = run_fit(cfg, resume=resume)
        if res.get("status") == "already finished":
            typer.echo(res["message"], err=True)
        typer.echo(json.dumps(res))
        return
    from completion.training.cluster import ClusterOptions, render_sbatch, submit_training

    opts = ClusterOptions(
        folder=str(submitit_folder.absolute()),
        partition=slurm_partition,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        cpus_per_task=cpus_per_task,
        mem_gb=mem_gb,
        timeout_min=timeout_min,
        account=account,
        qos=qos,
        constraint=constraint,
        setup=tuple(setup or ()),
        wait=wait,
    )
    if dry_run:
        typer.echo(render_sbatch(opts))
        return
    job = submit_training(config_to_dict(cfg), opts, resume="auto" if not resume else True)
    typer.echo(json.dumps({"job_id": job.job_id, "out_dir": cfg.out_dir, "logs": opts.folder}))
    if wait:
        typer.echo(json.dumps(job.results()[0]))
