"""Reading a batch's JOBS (CSV, JSONL or a folder of photos) into rows with every generate option resolved.

Relative paths in a file are relative to that file's folder; a cell left empty takes the command line's value
(BatchDefaults). Structural problems are a StitchError before anything runs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from splat.errors import StitchError

PHOTO_EXTS = (".jpg", ".jpeg", ".png", ".webp")
ROW_OPTIONS = ("max_side", "steps", "preset", "outpainter", "depth", "model_path", "outpaint_steps",
               "max_gaussians")  # fmt: skip
ROW_KEYS = ("photo", "prompt", "mode", "path", "seed", "name", *ROW_OPTIONS)
_INT_KEYS = ("seed", "max_side", "steps", "outpaint_steps", "max_gaussians")
_PATH_KEYS = ("photo", "path", "model_path")


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


def check_shared_options(row: BatchRow) -> None:
    """A flag every row shares (preset, mode) is known: checked before anything is written."""
    from engine.config import PRESETS
    from engine.trajectory import MODES

    if row.spec["preset"] not in PRESETS:
        raise StitchError(f"row {row.row}: unknown preset {row.spec['preset']!r}; use {', '.join(PRESETS)}")
    if not row.spec.get("path") and row.spec["mode"] not in MODES:
        raise StitchError(f"row {row.row}: unknown mode {row.spec['mode']!r}; one of {', '.join(MODES)}")
