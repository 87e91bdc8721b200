"""stitch batch (engine/tools/batch.py, engine/cluster.py): jobs files, per-row resume, index, contact sheet,
submitit's local executor surviving a killed worker, and the SLURM script submitit would submit."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from cli_in_process import run_cli
from PIL import Image

from engine.cluster import ClusterOptions, parse_time, render_sbatch
from engine.tools.batch import run_batch
from engine.tools.batch_index import write_index
from engine.tools.batch_jobs import BatchDefaults, read_jobs
from splat.errors import StitchError

PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "photos"
TINY = BatchDefaults(prompt="a scene", mode="single", max_side=48, steps=1)


def _photo(path: Path, colour=(200, 120, 40)) -> Path:
    rng = np.random.default_rng(sum(colour))
    img = np.clip(np.array(colour)[None, None] + rng.normal(0, 20, (36, 48, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path)
    return path


# --- jobs files -----------------------------------------------------------------------------------


def test_csv_jsonl_and_folder_jobs_resolve_rows(tmp_path):
    (tmp_path / "imgs").mkdir()
    _photo(tmp_path / "imgs" / "a.png")
    _photo(tmp_path / "imgs" / "b.jpg")
    (tmp_path / "jobs.csv").write_text(
        'photo,prompt,seed,max_side,name\nimgs/a.png,"a red, dusty canyon",3,64,canyon\nimgs/b.jpg,,,,\n'
    )
    rows = read_jobs(tmp_path / "jobs.csv", TINY)
    assert [r.name for r in rows] == ["canyon", "002-b"]
    assert rows[0].spec["prompt"] == "a red, dusty canyon" and rows[0].spec["seed"] == 3
    assert rows[0].spec["max_side"] == 64 and rows[1].spec["max_side"] == 48  # empty cell: the default
    assert rows[1].spec["photo"] == str((tmp_path / "imgs" / "b.jpg").resolve())  # relative to the CSV
    (tmp_path / "jobs.jsonl").write_text('{"photo": "imgs/a.png", "mode": "stage", "steps": 2}\n\n')
    (row,) = read_jobs(tmp_path / "jobs.jsonl", TINY)
    assert row.spec["mode"] == "stage" and row.spec["steps"] == 2 and row.spec["prompt"] == "a scene"
    rows = read_jobs(tmp_path / "imgs", TINY)
    assert [Path(r.spec["photo"]).name for r in rows] == ["a.png", "b.jpg"]
    # A changed option changes the row's key (the row starts over); the same row keeps it.
    assert read_jobs(tmp_path / "imgs", TINY)[0].key() == rows[0].key()
    assert read_jobs(tmp_path / "imgs", BatchDefaults(seed=1))[0].key() != rows[0].key()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("photo,colour\na.png,red\n", "unknown column"),
        ("prompt\nhello\n", "'photo' column"),
        ("photo,seed\na.png,1.5\n", "seed must be an integer"),
        ("photo,name\na.png,x\nb.png,x\n", "named 'x'"),
        ("photo\n", "holds no rows"),
    ],
)
def test_bad_jobs_files_are_one_clear_error(tmp_path, text, message):
    (tmp_path / "jobs.csv").write_text(text)
    with pytest.raises(StitchError, match=message):
        read_jobs(tmp_path / "jobs.csv")


def test_bad_jobs_file_is_exit_2_without_output(tmp_path, capsys):
    (tmp_path / "jobs.csv").write_text("photo,colour\na.png,red\n")
    code, _, err = run_cli(["batch", str(tmp_path / "jobs.csv"), "-o", str(tmp_path / "out")], capsys)
    assert code == 2 and err.startswith("error:") and "unknown column" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


# --- index and contact sheet ----------------------------------------------------------------------


def test_index_and_contact_sheet_report_every_row(tmp_path):
    """Two finished rows (one with an outcome verdict) and one failed: the index says so, and the sheet
    shows both previews and a red tile for the failure."""
    (tmp_path / "imgs").mkdir()
    for n in "abc":
        _photo(tmp_path / "imgs" / f"{n}.png")
    rows = read_jobs(tmp_path / "imgs", TINY)
    out = tmp_path / "out"
    for k, row in enumerate(rows):
        run = out / "runs" / row.name
        run.mkdir(parents=True)
        ok = k < 2
        manifest = {"status": "finished" if ok else "running", "n_gaussians": 1000 * (k + 1)}
        if k == 1:
            manifest["outcome"] = {"verdict": "pass"}
        (run / "manifest.json").write_text(json.dumps(manifest))
        if ok:
            Image.fromarray(np.full((40, 120, 3), (0, 255, 0) if k == 0 else (0, 0, 255), np.uint8)).save(
                run / "preview.png"
            )
        status = {
            "state": "finished" if ok else "failed",
            "key": row.key(),
            "attempts": 1,
            "wall_seconds": 1.5,
            "error": None if ok else "photo x.png does not exist; check the path",
        }
        (out / "status").mkdir(exist_ok=True)
        (out / "status" / f"{row.name}.json").write_text(json.dumps(status))
    lines: list[str] = []
    report = write_index(rows, out, lines.append)
    with report.index_csv.open() as fh:
        index = list(csv.DictReader(fh))
    assert [r["status"] for r in index] == ["finished", "finished", "failed"]
    assert index[1]["verdict"] == "pass" and index[0]["n_gaussians"] == "1000"
    assert index[2]["n_gaussians"] == ""
    assert index[2]["error"] == "photo x.png does not exist; check the path"
    assert json.loads(report.index_json.read_text())["failed"] == 1
    assert any("row 3" in ln and "does not exist" in ln for ln in lines)  # failures listed with their error
    sheet = np.asarray(Image.open(report.contact_sheet).convert("RGB")).astype(int)
    green = (sheet[..., 1] > 200) & (sheet[..., 0] < 60) & (sheet[..., 2] < 60)
    blue = (sheet[..., 2] > 200) & (sheet[..., 0] < 60) & (sheet[..., 1] < 60)
    dark_red = (abs(sheet[..., 0] - 70) < 4) & (abs(sheet[..., 1] - 20) < 4)
    assert green.sum() > 5000 and blue.sum() > 5000 and dark_red.sum() > 5000
    w = sheet.shape[1]
    assert green[:, : w // 3].any() and blue[:, w // 3 : 2 * w // 3].any() and dark_red[:, 2 * w // 3 :].any()


# --- SLURM script ---------------------------------------------------------------------------------


def test_sbatch_script_carries_every_cluster_option(tmp_path):
    pytest.importorskip("submitit")
    opts = ClusterOptions(
        executor="slurm",
        shards=4,
        partition="gpu",
        account="proj42",
        qos="high",
        gpus=1,
        time_min=parse_time("1:30:00"),
        mem_gb=32,
        cpus=8,
        array_parallelism=2,
    )
    script = render_sbatch(opts, 4, tmp_path / "logs")
    lines = set(script.splitlines())
    for flag in (
        "--partition=gpu",
        "--account=proj42",
        "--qos=high",
        "--gpus-per-node=1",
        "--time=90",
        "--mem=32GB",
        "--cpus-per-task=8",
        "--array=0-3%2",
        "--signal=USR2@90",
        "--requeue",
    ):
        assert f"#SBATCH {flag}" in lines, flag
    assert "-m submitit.core._submit" in script and str(tmp_path / "logs") in script
    assert parse_time("2-00:00:00") == 2880 and parse_time("45m") == 45 and parse_time("4h") == 240
    with pytest.raises(StitchError, match="--time"):
        parse_time("soon")
    with pytest.raises(StitchError, match="--partition"):
        ClusterOptions(executor="slurm").check()


def test_cli_dry_run_prints_the_array_script(tmp_path, capsys):
    pytest.importorskip("submitit")
    (tmp_path / "imgs").mkdir()
    for n in "abc":
        _photo(tmp_path / "imgs" / f"{n}.png")
    out = tmp_path / "out"
    code, stdout, _ = run_cli(
        [
            "batch",
            str(tmp_path / "imgs"),
            "-o",
            str(out),
            "--executor",
            "slurm",
            "--shards",
            "2",
            "--partition",
            "p1",
            "--gpus",
            "1",
            "--time",
            "30",
            "--dry-run",
        ],
        capsys,
    )
    assert code == 0 and "#SBATCH --array=0-1%2" in stdout and "#SBATCH --partition=p1" in stdout
    assert (out / "submitit" / "array.sbatch").read_text().startswith("#!/bin/bash")
    assert not (out / "runs").exists()  # nothing ran


# --- real runs ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_inline_batch_one_bad_row_and_resume(tmp_path):
    (tmp_path / "imgs").mkdir()
    _photo(tmp_path / "imgs" / "a.png")
    rows = "photo,mode\nimgs/a.png,single\nmissing.png,single\nimgs/a.png,stage\n"
    (tmp_path / "jobs.csv").write_text(rows)
    out = tmp_path / "out"
    opts = ClusterOptions(executor="inline")
    report = run_batch(tmp_path / "jobs.csv", out, TINY, opts, log=lambda s: None, progress=False)
    assert [r["status"] for r in report.rows] == ["finished", "failed", "finished"]
    assert "does not exist" in report.rows[1]["error"] and report.rows[2]["n_gaussians"] > 0
    assert (out / "runs" / report.rows[0]["name"] / "scene.ply").is_file()
    # Second run: finished rows are skipped (same attempts), the failed row is tried again.
    report = run_batch(tmp_path / "jobs.csv", out, TINY, opts, log=lambda s: None, progress=False)
    assert [r["attempts"] for r in report.rows] == [1, 2, 1]


@pytest.mark.slow
def test_local_executor_batch_of_the_seven_photos_survives_a_killed_worker(tmp_path):
    """2 shards on submitit's local executor; one worker is SIGKILLed mid-row: its shard is resubmitted, the
    row resumes and finishes; every row has a scene, the index and the contact sheet are written."""
    pytest.importorskip("submitit")
    photos = sorted(PHOTOS.glob("*.jpeg"))
    if len(photos) != 7:
        pytest.skip("shared photos not present")
    jobs = tmp_path / "photos"
    jobs.mkdir()
    for p in photos:
        shutil.copy(p, jobs / p.name)
    out = tmp_path / "out"
    killed: list[str] = []

    def killer() -> None:
        deadline = time.time() + 600
        while not killed and time.time() < deadline:
            for p in (out / "status").glob("*.json") if (out / "status").is_dir() else []:
                try:
                    s = json.loads(p.read_text())
                except (OSError, ValueError):
                    continue
                if s.get("state") == "running" and (out / "runs" / s["name"] / "manifest.json").is_file():
                    os.kill(s["pid"], signal.SIGKILL)
                    killed.append(s["name"])
                    return
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    defaults = BatchDefaults(prompt="a scene", mode="stage", max_side=48, steps=1)
    opts = ClusterOptions(executor="local", shards=2, retries=2)
    report = run_batch(jobs, out, defaults, opts, log=lambda s: None, progress=False)
    assert killed, "no worker was killed"
    assert [r["status"] for r in report.rows] == ["finished"] * 7
    victim = next(r for r in report.rows if r["name"] == killed[0])
    assert victim["attempts"] == 2
    for r in report.rows:
        assert Path(r["scene"]).is_file() and Path(r["preview"]).is_file()
    assert report.contact_sheet.is_file() and Image.open(report.contact_sheet).size[0] >= 3 * 480
