"""Run data-preparation shards through submitit: a SLURM job array, the local executor, or inline.

Each shard is a picklable callable returning a dict (teacher.TeacherJob, masks.MaskJob).
- executor "slurm": `submitit.AutoExecutor(cluster="slurm")`, one array task per shard
  (`slurm_partition`, `timeout_min`, `gpus_per_node`, `cpus_per_task`, `mem_gb`, `array_parallelism`).
- executor "local": submitit's LocalExecutor (one subprocess per shard on this machine, no SLURM needed).
- executor "inline": call the shards one after another in this process (debugging, single shard).
Shards skip finished items, so a preempted or failed array can simply be submitted again; on SLURM each
shard also requeues itself on time-out / preemption (submitit's checkpoint protocol: the jobs' `checkpoint`
returns the same shard). Account, qos, constraint, cpus, memory and setup lines as for training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from splat.errors import StitchError

EXECUTORS = ("inline", "local", "slurm")


@dataclass(frozen=True)
class ShardOptions:
    executor: str = "inline"
    folder: str = "submitit_logs"  # submitit's logs and pickles
    slurm_partition: str | None = None
    timeout_min: int = 240
    gpus_per_node: int = 0
    cpus_per_task: int = 4
    mem_gb: int = 16
    array_parallelism: int = 64
    wait: bool = True  # wait for the results (False: print job ids and return)
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: tuple[str, ...] = ()
    max_num_timeout: int = 10


def cluster_options(opts: ShardOptions):
    """The same SLURM options as a training job (one task per shard)."""
    from completion.training.cluster import ClusterOptions

    return ClusterOptions(
        executor="slurm",
        folder=opts.folder,
        partition=opts.slurm_partition,
        gpus_per_node=opts.gpus_per_node,
        tasks_per_node=1,
        cpus_per_task=opts.cpus_per_task,
        mem_gb=opts.mem_gb,
        timeout_min=opts.timeout_min,
        account=opts.account,
        qos=opts.qos,
        constraint=opts.constraint,
        setup=tuple(opts.setup),
        job_name="stitch-data",
        max_num_timeout=opts.max_num_timeout,
        array_parallelism=opts.array_parallelism,
    )


def run_shards(jobs: Sequence[Callable[[], dict]], opts: ShardOptions) -> list[dict]:
    """Run every shard; returns their result dicts (or {"job_id": ...} per shard when not waiting)."""
    if opts.executor not in EXECUTORS:
        raise StitchError(f"executor must be one of {', '.join(EXECUTORS)}, got {opts.executor!r}")
    if opts.executor == "inline":
        return [job() for job in jobs]
    import submitit

    Path(opts.folder).mkdir(parents=True, exist_ok=True)
    if opts.executor == "slurm":
        if not opts.slurm_partition:
            raise StitchError("the slurm executor needs --slurm-partition NAME")
        from completion.training.cluster import make_executor

        ex = make_executor(cluster_options(opts))
    else:
        ex = submitit.AutoExecutor(folder=opts.folder, cluster="local")
        ex.update_parameters(timeout_min=opts.timeout_min, gpus_per_node=opts.gpus_per_node)
    # submit the job objects themselves (not a wrapper): their `checkpoint` makes them requeue
    with ex.batch():
        pending = [ex.submit(job) for job in jobs]
    submitted = list(pending)
    if not opts.wait:
        return [{"job_id": j.job_id} for j in submitted]
    results = []
    for j in submitted:
        try:
            results.append(j.result())
        except Exception as exc:  # submitit wraps the worker's traceback: show its last line
            last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise StitchError(f"shard job {j.job_id} failed: {last} (logs in {opts.folder})") from exc
    return results
