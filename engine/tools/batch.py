"""`stitch batch JOBS`: many scenes, one run directory per row, resumable row by row, on SLURM or locally.

JOBS is one of
- a CSV file with a header: `photo` (required), then any of `prompt, mode, path, seed, name` and the
  per-row options `max_side, steps, preset, outpainter, depth, model_path, outpaint_steps, max_gaussians`
  (an empty cell takes the command line's value);
- a JSONL file: one object per line with the same keys;
- a folder of photos (.jpg/.jpeg/.png/.webp), each with the command line's --prompt.
Relative paths in a file are relative to that file's folder.

Output root:
    runs/<name>/            the row's run directory (as `stitch generate --run-dir`)
    status/<name>.json      state (running / finished / failed), attempts, wall time, one-line error
    batch.csv, batch.json   the index: row, status, wall time, outcome verdict, Gaussian count, paths, error
    contact_sheet.png       every row's preview (failed rows: their error) in one image
    submitit/               submitit's pickles and per-shard logs (local and slurm executors)

Resuming, per row: a finished row whose options did not change is skipped; a row that was running when its
worker died (preemption, timeout, kill) continues from its run directory's last finished view
(`generate --resume`); a failed row is tried again. Errors of one row are caught and recorded: the others
go on.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from engine.cluster import ClusterOptions, run_shards, split_shards
from engine.tools.batch_index import BatchReport, write_index
from engine.tools.batch_jobs import BatchDefaults, BatchRow, check_shared_options, read_jobs
from engine.tools.batch_row import BatchShard, read_json, row_is_finished


class BatchProgress:
    """One progress bar for the whole batch, fed from the rows' status files (shards may be elsewhere)."""

    def __init__(self, rows: list[BatchRow], out_root: Path, stream: TextIO | None = None) -> None:
        self.rows, self.out_root = rows, out_root
        self.stream = stream if stream is not None else sys.stderr
        self.t0 = time.time()
        self.start_done = self._counts()[0]
        self.last = ""

    def _counts(self) -> tuple[int, int]:
        done = failed = 0
        for row in self.rows:
            state = (read_json(self.out_root / "status" / f"{row.name}.json") or {}).get("state")
            if state == "finished" and row_is_finished(row, self.out_root):
                done += 1
            elif state == "failed":
                failed += 1
        return done, failed

    def line(self) -> str:
        done, failed = self._counts()
        total = len(self.rows)
        n = done + failed
        width = 24
        fill = round(width * n / max(total, 1))
        new = n - self.start_done
        elapsed = time.time() - self.t0
        if n >= total:
            eta = "done"
        elif new > 0:
            eta = "ETA " + _clock(elapsed / new * (total - n))
        else:
            eta = "ETA --:--"
        fail = f", {failed} failed" if failed else ""
        return f"batch [{'#' * fill}{'.' * (width - fill)}] {n}/{total} rows{fail}, {_clock(elapsed)} {eta}"

    def __call__(self) -> None:
        text = self.line()
        if text == self.last:
            return
        self.last = text
        if self.stream.isatty():
            print("\r" + text, end="", file=self.stream, flush=True)
        elif text.split(",")[0] != getattr(self, "_last_count", None):  # logs: one line per change of count
            self._last_count = text.split(",")[0]
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        self()
        if self.stream.isatty():
            print(file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def run_batch(
    jobs: str | Path,
    out_root: str | Path,
    defaults: BatchDefaults | None = None,
    cluster: ClusterOptions | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> BatchReport:
    """Run every row of JOBS (see the module doc) and write the index and the contact sheet."""
    cluster = cluster or ClusterOptions(executor="local")
    cluster.check()
    rows = read_jobs(jobs, defaults)
    for row in rows:  # fail fast on a flag every row shares (unknown preset or mode): nothing written yet
        check_shared_options(row)
    out = Path(out_root)
    out.mkdir(parents=True, exist_ok=True)
    todo = [r for r in rows if not row_is_finished(r, out)]
    n_shards = min(cluster.shards, max(len(todo), 1))
    log(f"batch: {len(rows)} rows, {len(rows) - len(todo)} already finished, {len(todo)} to run "
        f"({cluster.executor} executor, {n_shards} shard(s)); {out}")  # fmt: skip
    bar = BatchProgress(rows, out) if progress else None
    if todo:
        shards = split_shards(todo, cluster.shards)
        jobs_ = [BatchShard(s, out) for s in shards]

        def shard_done(k: int) -> bool:
            return all(read_json(out / "status" / f"{r.name}.json") is not None
                       and (read_json(out / "status" / f"{r.name}.json") or {}).get("state") != "running"
                       for r in shards[k])  # fmt: skip

        run_shards(jobs_, cluster, out / "submitit", on_poll=bar, log=log, is_done=shard_done)
    if bar:
        bar.close()
    return write_index(rows, out, log)
