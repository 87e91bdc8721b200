"""Overfitting check: trained on one real RGB-D frame, the tiny network completes that frame's held-out
disocclusion far better than the classical (geometry-only) completer."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from completion.training.overfit import overfit_frame


def test_tiny_model_memorises_one_real_frame_better_than_classical(tmp_path, shared_data):
    torch.set_num_threads(1)
    res = overfit_frame(shared_data / "rgbd" / "redkitchen_dev", tmp_path, steps=200)
    print(res)  # the figures for the report (pytest -s)
    assert res["eval_pixels"] > 100 and res["final_loss"] < 0.2 * res["first_loss"]
    assert res["network_mae"] < 0.6 * res["classical_mae"], res
    assert res["network_mae"] < 0.6 * res["nearest_mae"], res
