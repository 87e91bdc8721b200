"""The geometry benchmark's results: per-pair rows averaged into a table, and the summary files written."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from engine.bench.geometry_config import BENCH_VERSION

PAPER_MAE = {  # PAPER-NOTES (secondary notes, indicative): MAE in metres, ScanNet / Hypersim
    "Invisible Stitch": (0.0816, 0.7295),
    "ZoeDepth + global scale & shift": (0.1293, 0.7872),
    "LucidDreamer-style interpolation": (0.1604, 0.8057),
    "CostDCNet": (0.585, 4.01),
}


@dataclass
class BenchRow:
    level: str  # "sequence" (one gap of one sequence), "dataset" or "overall" (main-gap pairs pooled)
    dataset: str  # ScanNet, Hypersim, 7-Scenes, ICL-NUIM/Redwood, generic; "all" for the overall row
    sequence: str  # path under the benchmark root; "all" for dataset and overall rows
    gap: int  # frame gap j - i in index units; 0 on pooled rows (each sequence's own gap)
    method: str
    n_pairs: int
    mae: float
    rmse: float
    absrel: float
    delta1: float
    seam_mae: float
    scored_fraction: float  # mean fraction of frame j's pixels scored (uncovered and with ground truth)
    seconds: float  # mean method time per pair


COLUMN_NOTES = (
    "Columns: *pairs* scored (i, j) pairs; *MAE/RMSE* metres, *AbsRel* |pred - gt| / gt, *d<1.25* share of "
    "pixels within 25 % of the truth, *seam MAE* MAE within 10 px of the covered region, all on the scored "
    "pixels of frame j (not covered by frame i's render, with ground truth); *scored* the mean share of "
    "frame j's pixels that were scored; *s/pair* the method's mean seconds per pair. Dataset and overall "
    "rows pool the pairs of each sequence's own gap (each pair counts once)."
)


@dataclass
class BenchTable:
    rows: list[BenchRow]
    pair_results: list[dict] = field(default_factory=list)
    out_dir: Path | None = None
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        head = (
            "| level | dataset | sequence | gap | method | pairs | MAE (m) | RMSE | AbsRel | d<1.25 "
            "| seam MAE | scored | s/pair |"
        )
        lines = [head, "|" + "---|" * 13]
        for r in self.rows:
            lines.append(
                f"| {r.level} | {r.dataset} | {r.sequence} | {r.gap or 'own'} | {r.method} | {r.n_pairs} | "
                f"{r.mae:.4f} | {r.rmse:.4f} | {r.absrel:.4f} | {r.delta1:.3f} | {r.seam_mae:.4f} | "
                f"{100 * r.scored_fraction:.1f}% | {r.seconds:.2f} |"
            )
        return "\n".join(lines)


def _mean_row(level, dataset, sequence, gap, method, rs) -> BenchRow:
    def mean(k):
        vals = [r[k] for r in rs if r.get(k) is not None and not math.isnan(r[k])]
        return float(np.mean(vals)) if vals else math.nan

    return BenchRow(level, dataset, sequence, gap, method, len(rs), mean("mae"), mean("rmse"), mean("absrel"),
                    mean("delta1"), mean("seam_mae"), mean("scored_fraction"), mean("seconds"))  # fmt: skip


def summarise(results: list[dict], main_gaps: dict[str, int] | None = None) -> list[BenchRow]:
    """Rows per (sequence, gap, method); then, over each sequence's main gap, per dataset and overall."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        key = (r["dataset"], r.get("sequence", r["dataset"]), r["gap"], r["method"])
        groups.setdefault(key, []).append(r)
    rows = [_mean_row("sequence", ds, sq, g, m, rs) for (ds, sq, g, m), rs in groups.items()]
    main = [r for r in results if main_gaps is None or main_gaps.get(r.get("sequence")) == r["gap"]]
    methods = list(dict.fromkeys(r["method"] for r in main))
    datasets = list(dict.fromkeys(r["dataset"] for r in main))
    n_seqs = len({r.get("sequence") for r in main})
    if n_seqs > 1:
        for ds in datasets:
            for m in methods:
                rs = [r for r in main if r["dataset"] == ds and r["method"] == m]
                gaps = {r["gap"] for r in rs}
                if rs and len({r.get("sequence") for r in rs}) > 1:
                    rows.append(_mean_row("dataset", ds, "all", gaps.pop() if len(gaps) == 1 else 0, m, rs))
        for m in methods:
            rs = [r for r in main if r["method"] == m]
            gaps = {r["gap"] for r in rs}
            rows.append(_mean_row("overall", "all", "all", gaps.pop() if len(gaps) == 1 else 0, m, rs))
    return rows


def write_outputs(table: BenchTable, out: Path) -> None:
    """results.csv (every pair), summary.csv, summary.json and summary.md in `out`."""
    if table.pair_results:
        cols = list(dict.fromkeys(k for r in table.pair_results for k in r))
        with (out / "results.csv").open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            w.writerows(table.pair_results)
    fields = list(BenchRow.__dataclass_fields__)
    with (out / "summary.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(asdict(r) for r in table.rows)
    (out / "summary.json").write_text(
        json.dumps({"version": BENCH_VERSION, "rows": [asdict(r) for r in table.rows], "paper": PAPER_MAE,
                    "columns": COLUMN_NOTES}),
        encoding="utf-8",
    )  # fmt: skip
    paper = "\n".join(f"| {k} | {v[0]} | {v[1]} |" for k, v in PAPER_MAE.items())
    (out / "summary.md").write_text(
        "# Scene geometry benchmark\n\n"
        "MAE in metres on pixels the render of frame i did not cover in frame j, with valid ground truth.\n\n"
        + table.markdown()
        + "\n\n"
        + COLUMN_NOTES
        + "\n\nPaper figures (different data: ScanNet / Hypersim, learned models; indicative):\n\n"
        "| method | ScanNet MAE | Hypersim MAE |\n|---|---|---|\n" + paper + "\n",
        encoding="utf-8",
    )
