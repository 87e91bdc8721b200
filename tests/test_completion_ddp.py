"""DDP with 2 CPU processes (gloo, via torchrun as in the README) = one process on the combined batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from completion.training.build import build_model
from completion.training.config import config_from_dict
from completion.training.depth_io import write_depth, write_mask
from completion.training.masks import stroke_mask
from completion.training.train import fit

REPO = Path(__file__).resolve().parents[1]


def _synthetic_data(root: Path, n: int = 4) -> dict:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    for i in range(n):
        img = (rng.random((36, 52, 3)) * 255).astype(np.uint8)
        cv2.imwrite(str(root / "images" / f"im{i}.png"), img)
        depth = rng.uniform(1.0, 6.0, (36, 52)).astype(np.float32)
        write_depth(root / "depth", f"im{i}", depth, {"kind": "metric"})
        write_mask(root / "masks", f"im{i}", stroke_mask(36, 52, rng), {"type": "strokes"})
    return {"images": str(root / "images"), "depths": str(root / "depth"), "masks": str(root / "masks")}


def test_two_process_ddp_matches_one_process_on_the_combined_batch(tmp_path):
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    data = {**_synthetic_data(tmp_path / "data"), "size": [32, 48]}
    base = {"data": data, "max_steps": 2, "lr": 3e-3, "ckpt_every": 100, "seed": 3}

    ddp_cfg = tmp_path / "ddp.json"
    ddp_cfg.write_text(json.dumps({**base, "batch_size": 2, "out_dir": str(tmp_path / "ddp")}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*cmd, "-m", "completion.training.train", str(ddp_cfg)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["step"] == 2

    single = fit(config_from_dict({**base, "batch_size": 4, "out_dir": str(tmp_path / "one")}))
    assert single["step"] == 2
    a = load_file(str(tmp_path / "ddp" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    init = build_model(config_from_dict({**base, "out_dir": str(tmp_path / "x")})).state_dict()
    moved = 0
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=2e-5, msg=k)
        moved += int(not torch.equal(a[k], init[k]))
    assert moved > 50  # the step really changed the weights
