"""One row of a batch: generate (or resume) its run directory and keep its status file.

Resuming: a finished row whose options did not change is skipped; a row that was running when its worker
died (preemption, timeout, kill) continues from its run directory's last finished view (`generate
--resume`); a failed row is tried again. Errors of one row are caught and recorded: the others go on.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.tools.batch_jobs import BatchRow
from splat.errors import StitchError


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return text if len(text) <= limit else text[: text.rfind(" ", 0, limit - 4)].rstrip() + " ..."


def read_json(path: Path) -> dict | None:
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
    status = read_json(out_root / "status" / f"{row.name}.json") or {}
    manifest = read_json(out_root / "runs" / row.name / "manifest.json") or {}
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
    prev = read_json(status_path) or {}
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
        manifest = read_json(run_dir / "manifest.json")
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
