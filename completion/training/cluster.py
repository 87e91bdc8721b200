"""Training on a SLURM cluster through submitit: one multi-node DDP job that checkpoints and requeues itself.

`stitch train fit train.json --slurm-partition P --nodes N --gpus-per-node G` submits one job of N x G tasks
(one process per GPU). Each task exports submitit's `torch.distributed` environment (MASTER_ADDR/PORT, RANK,
WORLD_SIZE, LOCAL_RANK from SLURM), and `training.train.fit` joins the process group (NCCL on GPUs, gloo on
CPU) exactly as under torchrun.

Preemption and time limits follow submitit's checkpoint protocol: SLURM signals the job (USR2,
`signal_delay_s` before the limit), submitit calls `TrainJob.checkpoint` on rank 0, which returns the same
job with `resume="auto"`, and submitit requeues it (at most `max_num_timeout` time-outs; preemptions do not
count). The requeued job resumes from the latest checkpoint in out_dir (`ckpt_every` steps apart); the
steps since then are redone with the same data order, so the final weights equal an uninterrupted run's.

Paths in the config are made absolute before submission (the job may start in another directory).
`executor="local"` runs the same job with submitit's LocalExecutor (one machine, no SLURM) for testing.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from splat.errors import StitchError


@dataclass(frozen=True)
class ClusterOptions:
    executor: str = "slurm"  # slurm | local (submitit's LocalExecutor: tests, one machine)
    folder: str = "submitit_logs"  # submitit's pickles and logs
    partition: str | None = None
    nodes: int = 1
    gpus_per_node: int = 1
    tasks_per_node: int | None = None  # default: one per GPU (1 without GPUs)
    cpus_per_task: int = 8
    mem_gb: int | None = None
    timeout_min: int = 24 * 60
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: tuple[str, ...] = ()  # shell lines run before the job (module load ..., source venv/bin/activate)
    job_name: str = "stitch-train"
    max_num_timeout: int = 10  # requeues after hitting the time limit (preemptions are not counted)
    signal_delay_s: int = 120  # USR2 this long before the limit: time to stop cleanly
    array_parallelism: int = 64  # data-prep arrays: shards running at once
    wait: bool = False  # block until the job ends

    def ntasks(self) -> int:
        return self.tasks_per_node or max(1, self.gpus_per_node)


def slurm_parameters(opts: ClusterOptions) -> dict:
    """SlurmExecutor parameters (sbatch names) for these options."""
    if not opts.partition:
        raise StitchError("cluster training needs --slurm-partition NAME")
    if opts.nodes < 1 or opts.gpus_per_node < 0:
        raise StitchError(
            f"--nodes must be >= 1 and --gpus-per-node >= 0 (got {opts.nodes}, {opts.gpus_per_node})"
        )
    params: dict = {
        "job_name": opts.job_name,
        "partition": opts.partition,
        "nodes": opts.nodes,
        "ntasks_per_node": opts.ntasks(),
        "cpus_per_task": opts.cpus_per_task,
        "time": opts.timeout_min,
        "signal_delay_s": opts.signal_delay_s,
        "array_parallelism": opts.array_parallelism,
    }
    if opts.gpus_per_node:
        params["gpus_per_node"] = opts.gpus_per_node
    if opts.mem_gb:
        params["mem"] = f"{opts.mem_gb}GB"
    for k in ("account", "qos", "constraint"):
        if getattr(opts, k):
            params[k] = getattr(opts, k)
    if opts.setup:
        params["setup"] = list(opts.setup)
    return params


def render_sbatch(opts: ClusterOptions) -> str:
    """The sbatch script submitit writes for these options (for review; what `--dry-run` prints)."""
    from submitit.slurm.slurm import _make_sbatch_string

    folder = Path(opts.folder).absolute()
    command = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(folder))}"
    return _make_sbatch_string(command=command, folder=folder / "%j", **slurm_parameters(opts))


def make_executor(opts: ClusterOptions):
    """A submitit executor for these options; a one-line error without SLURM."""
    import submitit

    Path(opts.folder).mkdir(parents=True, exist_ok=True)
    if opts.executor == "local":
        ex = submitit.LocalExecutor(folder=opts.folder, max_num_timeout=opts.max_num_timeout)
        ex.update_parameters(
            timeout_min=opts.timeout_min,
            tasks_per_node=opts.ntasks(),
            gpus_per_node=opts.gpus_per_node,
            signal_delay_s=min(opts.signal_delay_s, 30),
        )
        return ex
    if opts.executor != "slurm":
        raise StitchError(f"executor must be slurm or local, got {opts.executor!r}")
    params = slurm_parameters(opts)
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise StitchError(
            "SLURM is not available on this machine (no sbatch/srun on PATH); submit from a login node, or "
            "train here with `stitch train fit CONFIG` / torchrun"
        )
    ex = submitit.SlurmExecutor(folder=opts.folder, max_num_timeout=opts.max_num_timeout)
    ex.update_parameters(**params)
    return ex


# --- training ------------------------------------------------------------------------------------


def absolute_config(raw: dict, base: Path | None = None) -> dict:
    """Training config dict with every path made absolute (relative to `base`, default the cwd)."""
    base = (base or Path.cwd()).absolute()

    def ab(v):
        return str((base / Path(v).expanduser()).absolute()) if v else v

    out = dict(raw)
    data = dict(out.get("data", {}))
    for k in ("images", "depths", "masks"):
        data[k] = ab(data.get(k))
    data["sources"] = [
        {**s, **{k: ab(s[k]) for k in ("root", "images", "depths", "masks", "split_file") if s.get(k)}}
        for s in data.get("sources", ())
    ]
    out["data"] = {k: v for k, v in data.items() if v not in (None,)}
    for k in ("out_dir", "val_rgbd", "model_path"):
        if out.get(k):
            out[k] = ab(out[k])
    model = out.get("model")
    if model and model not in ("tiny", "paper") and (base / model).exists():
        out["model"] = ab(model)
    return out


@dataclass(frozen=True)
class TrainJob:
    """One (multi-task) training job; picklable, checkpointable (submitit's protocol)."""

    config: dict = field(default_factory=dict)  # TrainConfig as a dict, absolute paths
    resume: bool | str = "auto"

    def __call__(self) -> dict:
        import submitit

        from completion.training.config import config_from_dict
        from completion.training.train import fit

        env = submitit.JobEnvironment()
        if env.num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(
                set_cuda_visible_devices=False, overwrite=True
            )
        res = fit(config_from_dict(self.config), resume=self.resume)
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        return res

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on rank 0 at preemption / time-out: requeue, resuming from the latest checkpoint
        (the periodic ones; steps after it are replayed identically)."""
        import submitit

        return submitit.helpers.DelayedSubmission(replace(self, resume="auto"))


def submit_training(raw_config: dict, opts: ClusterOptions, resume: bool | str = "auto"):
    """Submit one training job -> the submitit job (result() blocks until it ends)."""
    from completion.training.config import config_from_dict

    raw = absolute_config(raw_config)
    config_from_dict(raw)  # refuse a bad config here, not on the cluster
    ex = make_executor(opts)
    if opts.executor == "slurm":
        ex.update_parameters(job_name=opts.job_name)
    return ex.submit(TrainJob(raw, resume))
