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

import csv
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from engine.cluster import ClusterOptions, run_shards, split_shards
from splat.errors import StitchError

PHOTO_EXTS = (".jpg", ".jpeg", ".png", ".webp")
ROW_OPTIONS = ("max_side", "steps", "preset", "outpainter", "depth", "model_path", "outpaint_steps",
               "max_gaussians")  # fmt: skip
ROW_KEYS = ("photo", "prompt", "mode", "path", "seed", "name", *ROW_OPTIONS)
_INT_KEYS = ("seed", "max_side", "steps", "outpaint_steps", "max_gaussians")
_PATH_KEYS = ("photo", "path", "model_path")
INDEX_COLUMNS = ("row", "name", "status", "attempts", "wall_seconds", "verdict", "n_gaussians", "photo",
                 "prompt", "run_dir", "scene", "preview", "error")  # fmt: skip


@dataclass(frozen=True)
class BatchDefaults:
    """The command line's values for what a row leaves out (as `stitch generate`'s defaults)."""

    prompt: str = ""
    mode: str = "stage"
    seed: int = 0
    max_side: int = 384
    steps: int = -1
    preset: str = "offline"
    outpainter: str = ""
    depth: str = ""
    model_path: str | None = None
    outpaint_steps: int = 0
    max_gaussians: int = 0


@dataclass(frozen=True)
class BatchRow:
    row: int  # 1-based position in JOBS
    name: str  # run directory name, unique
    spec: dict[str, Any]  # every generate option, resolved (defaults filled in, absolute paths)

    def key(self) -> str:
        """What the row's result depends on: a changed option starts the row over."""
        return hashlib.sha1(json.dumps(self.spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _slug(text: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text).strip("-.")
    return keep[:60] or "row"


def _coerce(key: str, value: Any, where: str) -> Any:
    if key in _INT_KEYS:
        if isinstance(value, bool):
            raise StitchError(f"{where}: {key} must be an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise StitchError(f"{where}: {key} must be an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise StitchError(f"{where}: {key} must be an integer, got {value!r}")
        return int(as_float)
    if not isinstance(value, str | int | float):
        raise StitchError(f"{where}: {key} must be text, got {type(value).__name__}")
    return str(value)


def _read_records(jobs: Path) -> tuple[list[dict[str, Any]], Path, str]:
    """-> (records, base folder for relative paths, a description for messages)."""
    if jobs.is_dir():
        photos = sorted(p for p in jobs.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_EXTS)
        if not photos:
            raise StitchError(f"{jobs} holds no photos ({', '.join(PHOTO_EXTS)}); pass photos or a CSV/JSONL")
        return [{"photo": str(p)} for p in photos], jobs, str(jobs)
    if not jobs.is_file():
        raise StitchError(f"jobs file {jobs} does not exist; pass a CSV, a JSONL file or a folder of photos")
    try:
        text = jobs.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise StitchError(f"cannot read {jobs} as UTF-8 text ({exc})") from exc
    records: list[dict[str, Any]] = []
    if jobs.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise StitchError(f"{jobs} line {n}: not a JSON object ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise StitchError(f"{jobs} line {n}: expected a JSON object per line")
            records.append({"_line": n, **obj})
    elif jobs.suffix.lower() in (".csv", ".tsv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if jobs.suffix.lower() == ".tsv" else ",")
        if not reader.fieldnames or "photo" not in [f.strip() for f in reader.fieldnames]:
            raise StitchError(f"{jobs}: the first line must be a header with a 'photo' column")
        for n, rec in enumerate(reader, start=2):
            if None in rec:
                raise StitchError(f"{jobs} line {n}: more cells than columns (quote prompts with commas)")
            clean = {k.strip(): v.strip() for k, v in rec.items() if v is not None and v.strip() != ""}
            if clean:
                records.append({"_line": n, **clean})
    else:
        raise StitchError(f"{jobs}: jobs must be a .csv, .tsv or .jsonl file, or a folder of photos")
    if not records:
        raise StitchError(f"{jobs} holds no rows")
    return records, jobs.parent, str(jobs)


def read_jobs(jobs: str | Path, defaults: BatchDefaults | None = None) -> list[BatchRow]:
    """Parse JOBS into rows. Structural problems (unknown column, bad number) are a StitchError up front;
    a missing photo is that row's failure at run time."""
    defaults = defaults or BatchDefaults()
    records, base, desc = _read_records(Path(jobs))
    rows, names = [], set()
    for k, rec in enumerate(records, start=1):
        where = f"{desc} line {rec.pop('_line')}" if "_line" in rec else f"{desc} photo {k}"
        unknown = sorted(set(rec) - set(ROW_KEYS))
        if unknown:
            known = ", ".join(ROW_KEYS)
            raise StitchError(f"{where}: unknown column(s) {', '.join(unknown)}; known: {known}")
        if "photo" not in rec:
            raise StitchError(f"{where}: no photo given")
        spec: dict[str, Any] = {**asdict(defaults)}
        for key, value in rec.items():
            spec[key] = _coerce(key, value, where)
        for key in _PATH_KEYS:
            if spec.get(key):
                p = Path(os.path.expanduser(str(spec[key])))
                spec[key] = str(p if p.is_absolute() else (base / p).resolve())
        name = _slug(str(spec.pop("name", "") or f"{k:03d}-{Path(spec['photo']).stem}"))
        if name in names:
            raise StitchError(f"{where}: two rows are named {name!r}; names must be unique")
        names.add(name)
        spec.setdefault("path", None)
        rows.append(BatchRow(k, name, spec))
    return rows


# --- one row --------------------------------------------------------------------------------------


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return text if len(text) <= limit else text[: text.rfind(" ", 0, limit - 4)].rstrip() + " ..."


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)


def _config_for(spec: dict[str, Any]):
    from engine.config import generate_config_from_cli

    return generate_config_from_cli(
        photo=Path(spec["photo"]),
        prompt=spec["prompt"],
        mode=spec["mode"],
        path=Path(spec["path"]) if spec.get("path") else None,
        seed=spec["seed"],
        max_side=spec["max_side"],
        depth_file=None,
        steps=spec["steps"],
        preset=spec["preset"],
        outpainter=spec["outpainter"],
        depth_backend=spec["depth"],
        model_path=Path(spec["model_path"]) if spec.get("model_path") else None,
        outpaint_steps=spec["outpaint_steps"],
        max_gaussians=spec["max_gaussians"],
    )


def row_is_finished(row: BatchRow, out_root: Path) -> bool:
    status = _read_json(out_root / "status" / f"{row.name}.json") or {}
    manifest = _read_json(out_root / "runs" / row.name / "manifest.json") or {}
    return (
        status.get("state") == "finished"
        and status.get("key") == row.key()
        and manifest.get("status") == "finished"
    )


def run_row(row: BatchRow, out_root: Path) -> dict:
    """Generate (or resume) one row; never raises for a row's own error: returns its status record."""
    from engine.run import run_generate

    out_root = Path(out_root)
    status_path = out_root / "status" / f"{row.name}.json"
    run_dir = out_root / "runs" / row.name
    prev = _read_json(status_path) or {}
    if row_is_finished(row, out_root):
        return prev
    same_row = prev.get("key") == row.key()
    status = {
        "row": row.row, "name": row.name, "key": row.key(), "state": "running",
        "attempts": (prev.get("attempts", 0) if same_row else 0) + 1,
        "wall_seconds": prev.get("wall_seconds", 0.0) if same_row else 0.0,
        "host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "error": None,
    }  # fmt: skip
    _write_json(status_path, status)
    t0 = time.perf_counter()
    try:
        config = _config_for(row.spec)
        manifest = _read_json(run_dir / "manifest.json")
        resumable = same_row and manifest is not None and manifest.get("status") == "running"
        done = False
        if resumable:
            try:  # continue after the last finished view of the interrupted attempt
                run_generate(config, resume=run_dir, quiet=True)
                done = True
            except StitchError:
                pass  # damaged checkpoint (killed mid-write): start the row over below
        if not done:
            if run_dir.exists():  # a different row's leftovers or an attempt that died before its manifest
                shutil.rmtree(run_dir)
            run_generate(config, run_dir=run_dir, quiet=True)
        status["state"] = "finished"
    except StitchError as exc:
        status.update(state="failed", error=_one_line(str(exc)))
    except Exception as exc:  # a bug or a library error in one row must not stop the other rows
        status.update(state="failed", error=_one_line(f"{type(exc).__name__}: {exc}"))
    status["wall_seconds"] = round(status["wall_seconds"] + time.perf_counter() - t0, 2)
    status["ended"] = time.time()
    _write_json(status_path, status)
    return status


@dataclass
class BatchShard:
    """The rows of one shard, run one after another (a picklable submitit job)."""

    rows: list[BatchRow]
    out_root: Path

    def __call__(self) -> list[dict]:
        return [run_row(row, self.out_root) for row in self.rows]

    def checkpoint(self, *args: Any, **kwargs: Any):
        """submitit calls this on preemption or timeout: requeue the same shard (finished rows are skipped,
        the interrupted row resumes from its run directory)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


# --- the whole batch ------------------------------------------------------------------------------


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
            state = (_read_json(self.out_root / "status" / f"{row.name}.json") or {}).get("state")
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


@dataclass
class BatchReport:
    out_root: Path
    rows: list[dict] = field(default_factory=list)
    index_csv: Path | None = None
    index_json: Path | None = None
    contact_sheet: Path | None = None

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] != "finished"]


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
        _check_shared_options(row)
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
            return all(_read_json(out / "status" / f"{r.name}.json") is not None
                       and (_read_json(out / "status" / f"{r.name}.json") or {}).get("state") != "running"
                       for r in shards[k])  # fmt: skip

        run_shards(jobs_, cluster, out / "submitit", on_poll=bar, log=log, is_done=shard_done)
    if bar:
        bar.close()
    return write_index(rows, out, log)


def _check_shared_options(row: BatchRow) -> None:
    from engine.config import PRESETS
    from engine.trajectory import MODES

    if row.spec["preset"] not in PRESETS:
        raise StitchError(f"row {row.row}: unknown preset {row.spec['preset']!r}; use {', '.join(PRESETS)}")
    if not row.spec.get("path") and row.spec["mode"] not in MODES:
        raise StitchError(f"row {row.row}: unknown mode {row.spec['mode']!r}; one of {', '.join(MODES)}")


def write_index(rows: list[BatchRow], out: Path, log: Callable[[str], None] = print) -> BatchReport:
    report = BatchReport(out)
    for row in rows:
        status = _read_json(out / "status" / f"{row.name}.json") or {}
        run_dir = out / "runs" / row.name
        manifest = _read_json(run_dir / "manifest.json") or {}
        state = status.get("state", "not run")
        if state == "running":  # its worker died and every retry was used
            state = "incomplete"
        if state == "finished" and not row_is_finished(row, out):
            state = "stale"
        error = status.get("error")
        if state == "incomplete":
            error = f"the worker died during this row (attempt {status.get('attempts')}); run the batch again"
        outcome = manifest.get("outcome")
        verdict = outcome.get("verdict") if isinstance(outcome, dict) else None
        finished = state == "finished"
        report.rows.append(
            {
                "row": row.row, "name": row.name, "status": state, "attempts": status.get("attempts", 0),
                "wall_seconds": status.get("wall_seconds"), "verdict": verdict,
                "n_gaussians": manifest.get("n_gaussians") if finished else None,
                "photo": row.spec["photo"], "prompt": row.spec["prompt"], "run_dir": str(run_dir),
                "scene": str(run_dir / "scene.ply") if finished else None,
                "preview": str(run_dir / "preview.png") if finished else None, "error": error,
            }
        )  # fmt: skip
    report.index_csv = out / "batch.csv"
    with report.index_csv.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=INDEX_COLUMNS)
        w.writeheader()
        w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in report.rows)
    report.index_json = out / "batch.json"
    n_ok = sum(r["status"] == "finished" for r in report.rows)
    summary = {"rows": len(rows), "finished": n_ok, "failed": len(rows) - n_ok}
    report.index_json.write_text(json.dumps({**summary, "runs": report.rows}, indent=1), encoding="utf-8")
    from engine.tools.batch_sheet import save_contact_sheet

    report.contact_sheet = save_contact_sheet(report.rows, out / "contact_sheet.png")
    log(f"batch: {n_ok}/{len(rows)} rows finished; index {report.index_csv}, sheet {report.contact_sheet}")
    for r in report.failed:
        log(f"  row {r['row']} {r['name']}: {r['status']}: {r['error']}")
    return report
