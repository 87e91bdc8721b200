"""Sharded data preparation through submitit's local executor (no SLURM): every file produced exactly once."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("submitit")

from completion.training.depth_io import finished_stems, write_depth
from completion.training.masks import MaskJob, WarpConfig
from completion.training.shard import ShardOptions, run_shards
from splat.errors import StitchError


def test_two_shard_local_mask_job_writes_every_file_once(tmp_path):
    rng = np.random.default_rng(0)
    stems = [f"frame{i:02d}" for i in range(5)]
    for s in stems:
        d = np.full((24, 32), 4.0, np.float32)
        d[6:18, 10:22] = rng.uniform(1.0, 2.0)
        write_depth(tmp_path / "depth", s, d, {"kind": "metric"})
    warp = WarpConfig(renderer="points")
    jobs = [
        MaskJob(str(tmp_path / "depth"), str(tmp_path / "masks"), "warped", k, 2, 0, False, warp)
        for k in (0, 1)
    ]
    opts = ShardOptions(executor="local", folder=str(tmp_path / "logs"), timeout_min=5)
    results = run_shards(jobs, opts)
    assert [r["written"] for r in results] == [3, 2]  # shard k takes every 2nd file
    assert finished_stems(tmp_path / "masks") == stems
    assert sorted(p.name for p in (tmp_path / "masks").glob("*.png")) == [f"{s}.png" for s in stems]
    sources = [json.loads((tmp_path / "masks" / f"{s}.json").read_text())["source"] for s in stems]
    assert sources == stems
    # a second submission finds everything done
    again = run_shards(jobs, ShardOptions(executor="inline"))
    assert sum(r["written"] for r in again) == 0 and sum(r["skipped"] for r in again) == 5


def test_sharding_does_not_change_the_masks(tmp_path):
    for s in ("a", "b", "c"):
        write_depth(tmp_path / "depth", s, np.linspace(1, 5, 24 * 32, dtype=np.float32).reshape(24, 32), {})
    warp = WarpConfig(renderer="points")
    one = [MaskJob(str(tmp_path / "depth"), str(tmp_path / "m1"), warp=warp)]
    two = [
        MaskJob(str(tmp_path / "depth"), str(tmp_path / "m2"), "warped", k, 2, 0, False, warp) for k in (0, 1)
    ]
    run_shards(one, ShardOptions())
    run_shards(two, ShardOptions())
    for s in ("a", "b", "c"):
        assert (tmp_path / "m1" / f"{s}.png").read_bytes() == (tmp_path / "m2" / f"{s}.png").read_bytes()
    holes = [json.loads((tmp_path / "m1" / f"{s}.json").read_text())["hole_fraction"] for s in "abc"]
    assert max(holes) > 0.01 and len(set(holes)) > 1  # real, per-file different masks


def test_slurm_without_partition_is_a_clear_error(tmp_path):
    with pytest.raises(StitchError, match="--slurm-partition"):
        run_shards([], ShardOptions(executor="slurm", folder=str(tmp_path)))


def test_data_prep_shards_requeue_themselves_with_the_training_options(tmp_path):
    from completion.training.cluster import render_sbatch
    from completion.training.shard import cluster_options
    from completion.training.teacher import TeacherJob

    for job in (MaskJob("depth", "masks", shard=1, num_shards=4), TeacherJob("imgs", "out", "gt", shard=2)):
        again = job.checkpoint()  # submitit calls this on time-out / preemption, then requeues it
        assert again.function == job  # the same shard again; finished items are skipped
    opts = ShardOptions(executor="slurm", folder=str(tmp_path), slurm_partition="cpu", account="vision",
                        qos="low", constraint="skylake", setup=("source venv/bin/activate",))  # fmt: skip
    lines = render_sbatch(cluster_options(opts)).splitlines()
    wants = ["#SBATCH --account=vision", "#SBATCH --qos=low", "#SBATCH --constraint=skylake"]
    wants += ["#SBATCH --ntasks-per-node=1", "#SBATCH --partition=cpu", "source venv/bin/activate"]
    for want in wants:
        assert want in lines, want
