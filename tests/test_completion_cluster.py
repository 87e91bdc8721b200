"""Cluster training through submitit: the sbatch script, the no-SLURM error, and a local 2-process DDP job
that is preempted (USR2, as SLURM sends it), requeues itself and ends with the uninterrupted run's weights."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("submitit")
pytest.importorskip("transformers")

from completion.training.build import build_model
from completion.training.cluster import ClusterOptions, TrainJob, render_sbatch, submit_training
from completion.training.config import config_from_dict
from completion.training.depth_io import write_depth, write_mask
from completion.training.masks import stroke_mask
from completion.training.train import fit


def _data(root: Path, n: int = 4) -> dict:
    rng = np.random.default_rng(0)
    for i in range(n):
        # two scenes with the same file names: ids must stay distinct
        scene = root / "images" / f"scene{i % 2}"
        scene.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(scene / f"rgb_{i // 2:05d}.png"), (rng.random((36, 52, 3)) * 255).astype(np.uint8))
        sid = f"scene{i % 2}__rgb_{i // 2:05d}"
        write_depth(
            root / "depth", sid, rng.uniform(1.0, 6.0, (36, 52)).astype(np.float32), {"kind": "metric"}
        )
        write_mask(root / "masks", sid, stroke_mask(36, 52, rng), {"type": "strokes"})
    return {"images": str(root / "images"), "depths": str(root / "depth"), "masks": str(root / "masks")}


def test_sbatch_script_has_the_requested_resources(tmp_path):
    opts = ClusterOptions(
        folder=str(tmp_path / "logs"),
        partition="gpu",
        nodes=2,
        gpus_per_node=4,
        cpus_per_task=10,
        mem_gb=200,
        timeout_min=600,
        account="vision",
        qos="high",
        constraint="a100",
        setup=("module load cuda/12.4", "source ~/stitch/.venv/bin/activate"),
    )
    text = render_sbatch(opts)
    lines = text.splitlines()
    for want in (
        "#SBATCH --partition=gpu",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",  # one process per GPU: 8-way DDP
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --cpus-per-task=10",
        "#SBATCH --mem=200GB",
        "#SBATCH --time=600",
        "#SBATCH --account=vision",
        "#SBATCH --qos=high",
        "#SBATCH --constraint=a100",
        "#SBATCH --signal=USR2@120",  # time to requeue before the limit
        "#SBATCH --job-name=stitch-train",
    ):
        assert want in lines, (want, text)
    srun = next(i for i, line in enumerate(lines) if line.startswith("srun"))
    assert lines.index("module load cuda/12.4") < srun and "submitit.core._submit" in lines[srun]
    assert str((tmp_path / "logs").absolute()) in lines[srun]


def test_cluster_fit_without_slurm_is_one_line(tmp_path, monkeypatch):
    from cli import app

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch / srun
    cfg = tmp_path / "train.json"
    cfg.write_text(json.dumps({"data": _data(tmp_path / "d"), "out_dir": str(tmp_path / "run")}))
    res = CliRunner().invoke(app, ["train", "fit", str(cfg), "--slurm-partition", "gpu"])
    from splat.errors import StitchError

    assert isinstance(res.exception, StitchError), res.output  # cli.main prints it as one line, exit 2
    msg = str(res.exception)
    assert "SLURM is not available" in msg and "\n" not in msg


def _task_pids(controller_pid: int) -> list[int]:
    """The job's task processes (children of submitit's local controller)."""
    out = []
    for tid in os.listdir(f"/proc/{controller_pid}/task"):
        with open(f"/proc/{controller_pid}/task/{tid}/children") as f:
            out += [int(p) for p in f.read().split()]
    return out


@pytest.mark.slow
def test_local_ddp_job_is_preempted_requeues_and_matches_the_uninterrupted_run(tmp_path):
    from safetensors.torch import load_file

    steps = 16
    data = {**_data(tmp_path / "data"), "size": [32, 48]}
    base = {"data": data, "max_steps": steps, "lr": 1e-3, "ckpt_every": 2, "seed": 5, "batch_size": 1}
    opts = ClusterOptions(executor="local", folder=str(tmp_path / "logs"), gpus_per_node=0, tasks_per_node=2,
                          timeout_min=20)  # fmt: skip
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # the reference: the same 2-process job, never interrupted (same reduction order -> same floats)
    ref = submit_training({**base, "out_dir": str(tmp_path / "uninterrupted")}, opts)
    job = submit_training({**base, "out_dir": str(tmp_path / "cluster")}, opts)
    latest = tmp_path / "cluster" / "checkpoints" / "latest.json"
    deadline = time.time() + 240
    while time.time() < deadline and not latest.is_file():
        assert not job.done(), job.stderr()
        time.sleep(0.05)
    step_at_signal = json.loads(latest.read_text())["step"]
    assert step_at_signal < steps, "the job finished before it could be preempted; make it longer"
    for pid in _task_pids(int(job.job_id)):  # SLURM signals every task of a preempted job
        os.kill(pid, signal.SIGUSR2)
    res = job.results()[0]  # rank 0 (every rank returns the same dict)
    assert res["step"] == steps and res["status"] == "resumed" and res["resumed_from"] >= step_at_signal
    assert "Requeued" in (job.stderr() or "") + (job.stdout() or "")
    rows = (tmp_path / "cluster" / "log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, steps + 1))  # no duplicated rows
    assert ref.results()[0]["status"] == "trained"

    a = load_file(str(tmp_path / "cluster" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "uninterrupted" / "model" / "model.safetensors"))
    init = build_model(config_from_dict({**base, "out_dir": str(tmp_path / "x")})).state_dict()
    moved = 0
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
        moved += int(not torch.equal(a[k], init[k]))
    assert moved > 50  # training really changed the weights
    # the logged loss is the global batch's (all-reduced), as one process on both samples logs it
    single = fit(
        config_from_dict({**base, "max_steps": 1, "batch_size": 2, "out_dir": str(tmp_path / "one")})
    )
    assert float(rows[0].split(",")[2]) == pytest.approx(single["final_loss"], rel=1e-5)


def test_requeued_job_resumes_automatically(tmp_path):
    job = TrainJob({"out_dir": "x"}, resume=False)
    again = job.checkpoint()
    assert again.function.resume == "auto" and again.function.config == {"out_dir": "x"}


def test_paths_are_made_absolute_before_submission(tmp_path, monkeypatch):
    from completion.training.cluster import absolute_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "zoe").mkdir()
    raw = {"data": {"sources": [{"root": "nyu.mat", "split_file": "splits.mat", "depths": "d", "weight": 1}],
                    "images": ""}, "out_dir": "runs/x", "val_rgbd": "rgbd", "model": "zoe"}  # fmt: skip
    out = absolute_config(raw)
    src = out["data"]["sources"][0]
    assert src["root"] == str(tmp_path / "nyu.mat") and src["split_file"] == str(tmp_path / "splits.mat")
    assert out["out_dir"] == str(tmp_path / "runs/x") and out["model"] == str(tmp_path / "zoe")
    assert absolute_config({"model": "Intel/zoedepth-nyu-kitti"})["model"] == "Intel/zoedepth-nyu-kitti"
