"""The training log: one log.csv row per logged step, trimmed on resume, and curves.png plotted from it."""

from __future__ import annotations

import csv
import os
from pathlib import Path

LOG_FIELDS = ("step", "epoch", "loss", "silog", "known_mse", "lr", "grad_norm", "val_mae", "seconds")


def append_log(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in LOG_FIELDS})


def truncate_log(path: Path, step: int) -> None:
    """Keep the rows up to `step` (the resumed checkpoint): the steps after it are about to be redone."""
    if not path.exists():
        return
    rows = [r for r in read_log(path) if (r.get("step") or "").isdigit() and int(r["step"]) <= step]
    tmp = path.with_name(".log.csv.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in LOG_FIELDS})
    os.replace(tmp, path)


def read_log(path: str | Path) -> list[dict]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def plot_curves(log_csv: Path, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_csv)
    steps = [int(r["step"]) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    val = [(int(r["step"]), float(r["val_mae"])) for r in rows if r["val_mae"] not in ("", "nan")]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    ax[0].plot(steps, loss, lw=1)
    ax[0].set(xlabel="step", ylabel="training loss", yscale="log", title="loss (SILog + known MSE)")
    if val:
        ax[1].plot(*zip(*val, strict=True), marker="o")
    ax[1].set(xlabel="step", ylabel="MAE (m), uncovered pixels", title="validation (geometry benchmark)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def last_logged_loss(log_csv: Path) -> float:
    try:
        rows = read_log(log_csv)
    except OSError:
        return float("nan")
    return float(rows[-1]["loss"]) if rows else float("nan")
