"""A batch's index: each row's status, verdict and paths in batch.csv and batch.json; the contact sheet."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.tools.batch_jobs import BatchRow
from engine.tools.batch_row import read_json, row_is_finished

INDEX_COLUMNS = ("row", "name", "status", "attempts", "wall_seconds", "verdict", "n_gaussians", "photo",
                 "prompt", "run_dir", "scene", "preview", "error")  # fmt: skip


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


def write_index(rows: list[BatchRow], out: Path, log: Callable[[str], None] = print) -> BatchReport:
    report = BatchReport(out)
    for row in rows:
        status = read_json(out / "status" / f"{row.name}.json") or {}
        run_dir = out / "runs" / row.name
        manifest = read_json(run_dir / "manifest.json") or {}
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
