"""The benchmark's figure: error maps for a few pairs and MAE against the frame gap (matplotlib, Agg).

It takes finished results (engine.bench.results.BenchTable); the benchmark run (geometry.py) calls it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from engine.bench.results import BenchTable

ERROR_MAX = 0.5  # metres: top of the error colour scale


def save_figure(table: BenchTable, cases: list[dict], path: Path) -> Path:
    """cases: dicts with dataset, pair, image [H,W,3], gt, known, covered [H,W], preds {method: [H,W]}."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    methods = list(cases[0]["preds"]) if cases else sorted({r.method for r in table.rows})
    seq_rows = [r for r in table.rows if getattr(r, "level", "sequence") == "sequence"]
    # One MAE-vs-gap panel per sequence (the first four).
    datasets = list(dict.fromkeys(getattr(r, "sequence", r.dataset) for r in seq_rows))[:4]
    n_cols = 3 + len(methods)
    n_rows = len(cases) + 1
    fig = plt.figure(figsize=(2.2 * n_cols, 1.9 * n_rows + 1.2), dpi=110)
    grid = fig.add_gridspec(n_rows, n_cols, height_ratios=[1.0] * len(cases) + [1.5])
    err_img = None
    for r, case in enumerate(cases):
        gt, covered = case["gt"], case["covered"]
        valid = gt > 0
        scored = valid & ~covered
        vmax = float(np.percentile(gt[valid], 98)) if valid.any() else 1.0
        panels = [
            ("frame j", case["image"], None),
            ("ground truth", np.where(valid, gt, np.nan), "depth"),
            ("known (rendered)", np.where(covered, case["known"], np.nan), "depth"),
        ]
        for m in methods:
            err = np.where(scored, np.abs(case["preds"][m] - gt), np.nan)
            mae = float(np.nanmean(err)) if scored.any() else float("nan")
            panels.append((f"{m}\nMAE {mae:.3f} m", err, "error"))
        for c, (title, data, kind) in enumerate(panels):
            ax = fig.add_subplot(grid[r, c])
            ax.set_xticks([])
            ax.set_yticks([])
            if kind is None:
                ax.imshow(np.clip(data, 0, 1))
                ax.set_ylabel(f"{case.get('sequence', case['dataset'])}\n{case['pair']}", fontsize=7)
            elif kind == "depth":
                ax.imshow(data, cmap="turbo_r", vmin=0.0, vmax=vmax)
            else:
                ax.imshow(np.where(covered, 0.0, np.nan), cmap="gray", vmin=-1, vmax=1)  # covered: grey
                err_img = ax.imshow(data, cmap="magma", vmin=0.0, vmax=ERROR_MAX)
            ax.set_title(title, fontsize=7)
    if err_img is not None:
        cax = fig.add_axes((0.92, 1.0 - 0.9 * len(cases) / n_rows, 0.01, 0.5 * len(cases) / n_rows))
        fig.colorbar(err_img, cax=cax).set_label("|error| (m)", fontsize=7)
    for k, ds in enumerate(datasets):
        span = max(1, n_cols // max(1, len(datasets)))
        ax = fig.add_subplot(grid[n_rows - 1, k * span : min(n_cols, (k + 1) * span)])
        for m in methods:
            pts = sorted(
                (row.gap, row.mae)
                for row in seq_rows
                if getattr(row, "sequence", row.dataset) == ds and row.method == m
            )
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
        ax.set_title(f"{ds}: MAE vs gap", fontsize=8)
        ax.set_xlabel("frame gap (index)", fontsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # gaps are whole frames
        ax.set_ylabel("MAE (m)", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        if k == 0:
            ax.legend(fontsize=6)
    fig.suptitle(
        "Depth completion on uncovered pixels (scene-geometry benchmark). Error maps: grey = covered, "
        "white = no ground truth",
        fontsize=9,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
