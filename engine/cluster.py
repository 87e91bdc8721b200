"""Run shards of work through submitit: a SLURM job array, submitit's local executor, or inline.

Used by `stitch batch` (rows of photo + prompt) and `stitch bench geometry` (benchmark sequences). The
scheduling is submitit's: one array task per shard on SLURM, one subprocess per shard with the local
executor (tests, laptops), or a plain loop in this process ("inline", no submitit needed).

Preemption and timeouts: a shard is a callable with a `checkpoint` method, so submitit's signal handler
(SIGUSR2, sent `signal_delay_s` before the time limit or on preemption) requeues the same shard; shards skip
finished work, so a requeued or resubmitted shard only does what is left. `#SBATCH --requeue` lets SLURM put a
preempted task back in the queue too.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splat.errors import StitchError

EXECUTORS = ("inline", "local", "slurm")


@dataclass(frozen=True)
class ClusterOptions:
    executor: str = "inline"
    shards: int = 1
    folder: Path = Path("submitit")  # submitit's pickles and logs (one per shard)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus: int = 0  # per shard (gpus_per_node)
    time_min: int = 240  # per shard; SIGUSR2 90 s before -> checkpoint + requeue
    mem_gb: int = 16
    cpus: int = 4
    array_parallelism: int = 64
    max_requeues: int = 3  # per shard, preemption and timeout together (submitit's max_num_timeout)
    retries: int = 2  # resubmissions of shards that died (killed, node failure) after the first round

    def check(self) -> None:
        if self.executor not in EXECUTORS:
            raise StitchError(f"--executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if self.shards < 1:
            raise StitchError(f"--shards must be >= 1, got {self.shards}")
        for name in ("gpus", "retries"):
            if getattr(self, name) < 0:
                raise StitchError(f"--{name} must be >= 0, got {getattr(self, name)}")
        for name, flag in (("time_min", "--time"), ("mem_gb", "--mem"), ("cpus", "--cpus")):
            if getattr(self, name) < 1:
                raise StitchError(f"{flag} must be >= 1, got {getattr(self, name)}")
        if self.executor == "slurm" and not self.partition:
            raise StitchError("the slurm executor needs --partition NAME (sinfo lists them)")


def parse_time(text: str) -> int:
    """SLURM-style time ('90', '1:30:00', '2-00:00:00', '45m', '4h') -> minutes."""
    t = text.strip().lower()
    try:
        if t.endswith("h"):
            return max(1, round(float(t[:-1]) * 60))
        if t.endswith("m"):
            return max(1, round(float(t[:-1])))
        days = 0
        if "-" in t:
            d, t = t.split("-", 1)
            days = int(d)
        parts = [int(p) for p in t.split(":")]
        if len(parts) == 1:
            minutes = parts[0]
        elif len(parts) == 2:  # MM:SS as sbatch reads it
            minutes = parts[0] + (1 if parts[1] else 0)
        elif len(parts) == 3:
            minutes = parts[0] * 60 + parts[1] + (1 if parts[2] else 0)
        else:
            raise ValueError(text)
        return max(1, days * 24 * 60 + minutes)
    except ValueError:
        raise StitchError(f"--time {text!r} is not a time: use minutes, H:MM:SS, D-HH:MM:SS or 4h") from None


def split_shards(items: Sequence[Any], n_shards: int) -> list[list[Any]]:
    """Round-robin split (neighbouring rows land on different shards: similar sizes run in parallel)."""
    n = max(1, min(n_shards, len(items)))
    return [list(items[k::n]) for k in range(n)]


def _slurm_params(opts: ClusterOptions) -> dict[str, Any]:
    """submitit SlurmExecutor parameters (sbatch flags) for the options."""
    params: dict[str, Any] = {
        "partition": opts.partition,
        "time": opts.time_min,
        "mem": f"{opts.mem_gb}GB",
        "cpus_per_task": opts.cpus,
        "ntasks_per_node": 1,
        "array_parallelism": opts.array_parallelism,
        "job_name": "stitch",
        "additional_parameters": {"requeue": True},
    }
    if opts.gpus:
        params["gpus_per_node"] = opts.gpus
    if opts.account:
        params["account"] = opts.account
    if opts.qos:
        params["qos"] = opts.qos
    return params


def _slurm_executor(opts: ClusterOptions, folder: Path):
    import submitit

    try:
        ex = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=opts.max_requeues)
    except RuntimeError as exc:  # no srun: not on a SLURM login node
        raise StitchError(f"--executor slurm: {exc} (--dry-run prints the script anywhere)") from None
    ex.update_parameters(**_slurm_params(opts))
    return ex


def render_sbatch(opts: ClusterOptions, n_tasks: int, folder: Path | None = None) -> str:
    """The sbatch script submitit submits for an array of `n_tasks` shards (nothing is submitted; works
    without SLURM: the same submitit function renders it)."""
    _require_submitit()
    from submitit.slurm.slurm import _make_sbatch_string

    folder = Path(folder or opts.folder)
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, map_count=n_tasks, **_slurm_params(opts))


def _require_submitit() -> None:
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise StitchError(
            "the local and slurm executors need submitit: pip install 'submitit>=1.5' (or --executor inline)"
        ) from None


def _make_executor(opts: ClusterOptions, folder: Path):
    _require_submitit()
    import submitit

    folder.mkdir(parents=True, exist_ok=True)
    if opts.executor == "slurm":
        return _slurm_executor(opts, folder)
    ex = submitit.LocalExecutor(folder=str(folder), max_num_timeout=opts.max_requeues)
    ex.update_parameters(timeout_min=opts.time_min, gpus_per_node=opts.gpus)
    return ex


def _first_line(exc: BaseException) -> str:
    """submitit's errors append the worker's whole log: the first line says what happened."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


def run_shards(
    shards: Sequence[Callable[[], Any]],
    opts: ClusterOptions,
    folder: Path,
    on_poll: Callable[[], None] | None = None,
    log: Callable[[str], None] = print,
    is_done: Callable[[int], bool] | None = None,
) -> list[Any]:
    """Run every shard, resubmitting shards that died up to `opts.retries` times.

    Returns one entry per shard: its return value, or the exception of its last attempt. `on_poll` is called
    about twice a second while jobs run (progress bars). `is_done(k)` says whether shard k's work is complete
    (then a dead shard is not resubmitted)."""
    opts.check()
    results: list[Any] = [None] * len(shards)
    if opts.executor == "inline":
        for k, shard in enumerate(shards):
            try:
                results[k] = shard()
            except StitchError as exc:
                results[k] = exc
            if on_poll:
                on_poll()
        return results
    ex = _make_executor(opts, folder)
    todo = list(range(len(shards)))
    for attempt in range(opts.retries + 1):
        jobs = ex.submit_array([shards[k] for k in todo])
        ids = ", ".join(str(j.job_id) for j in jobs[:4]) + (" ..." if len(jobs) > 4 else "")
        log(f"submitted {len(jobs)} {opts.executor} job(s) ({ids}); logs in {folder}")
        while not all(j.done() for j in jobs):
            if on_poll:
                on_poll()
            time.sleep(0.5)
        failed = []
        for k, job in zip(todo, jobs, strict=True):
            try:
                results[k] = job.result()
            except Exception as exc:  # killed worker, node failure, or an error the shard did not catch
                results[k] = exc
                if is_done is None or not is_done(k):
                    failed.append(k)
        if on_poll:
            on_poll()
        if not failed:
            break
        if attempt < opts.retries:
            log(
                f"{len(failed)} shard(s) died ({_first_line(results[failed[0]])}); resubmitting "
                f"(retry {attempt + 1}/{opts.retries}), finished work is kept"
            )
        todo = failed
    return results


def write_dry_run(opts: ClusterOptions, n_tasks: int, folder: Path) -> str:
    """`--dry-run`: the sbatch script submitit would submit, kept as FOLDER/array.sbatch; nothing is sent."""
    if opts.executor != "slurm":
        raise StitchError("--dry-run shows the SLURM script; add --executor slurm --partition NAME")
    opts.check()
    script = render_sbatch(opts, n_tasks, folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "array.sbatch").write_text(script, encoding="utf-8")
    return script
