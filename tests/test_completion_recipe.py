"""`recipe: release` reproduces the release's trainer where it differs from ours (each difference checked)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from completion.network.model import DepthCompletionModel
from completion.training.build import build_optimizer, slow_parameters
from completion.training.config import config_from_dict, effective_config
from completion.training.data import CompletionDataset
from completion.training.depth_io import write_depth, write_mask
from completion.training.losses import completion_loss
from completion.training.masks import WarpConfig, warped_hole_mask


def _batch(seed: int = 0) -> tuple[torch.Tensor, dict]:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(2, 1, 6, 8, generator=g) * 4 + 1
    valid = (torch.rand(2, 1, 6, 8, generator=g) > 0.2).float()
    valid[1, :, :3] = 0  # unequal valid counts: pooled and per-sample means differ
    known = (torch.rand(2, 1, 6, 8, generator=g) > 0.6).float() * valid
    pred = torch.rand(2, 1, 6, 8, generator=g) * 4 + 1
    return pred, {"target": target, "valid": valid, "known": known, "sparse": target * known}


def test_release_loss_pools_silog_over_the_batch_and_averages_mse_over_all_pixels():
    pred, b = _batch()
    loss, _ = completion_loss(pred, b, pooled=True)
    v = b["valid"].bool()
    g = torch.log(pred[v]) - torch.log(b["target"][v])
    silog = 10 * torch.sqrt((g**2).mean() - 0.85 * g.mean() ** 2)
    mse = (((pred - b["sparse"]) ** 2) * b["known"]).mean()  # over all pixels, not the known ones
    torch.testing.assert_close(loss, silog + mse)
    ours, _ = completion_loss(pred, b)
    assert abs(float(ours) - float(loss)) > 1e-3  # the two recipes really differ on this batch


def test_release_trains_the_dpt_reassemble_layers_at_the_backbone_lr():
    model = DepthCompletionModel.tiny()
    reassemble = {id(p) for p in model.zoe.neck.reassemble_stage.parameters()}
    assert reassemble and not reassemble & {id(p) for p in slow_parameters(model, "stitch")}
    assert reassemble <= {id(p) for p in slow_parameters(model, "release")}
    cfg = config_from_dict({"recipe": "release", "lr": 1e-3})
    opt = build_optimizer(model, cfg)
    enc = next(g for g in opt.param_groups if g["name"] == "encoder")
    assert enc["lr"] == pytest.approx(1e-4) and reassemble <= {id(p) for p in enc["params"]}


def test_release_data_rescales_uniformly_in_range_and_never_crops(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "im").mkdir()
    img = (rng.random((40, 64, 3)) * 255).astype(np.uint8)
    img[:, :8] = 0  # a dark left stripe: a crop would move or cut it
    cv2.imwrite(str(tmp_path / "im" / "a.png"), img)
    depth = np.linspace(1.0, 4.0, 40 * 64, dtype=np.float32).reshape(40, 64)
    write_depth(tmp_path / "d", "a", depth, {"kind": "metric"})
    hole = np.zeros((40, 64), bool)
    hole[10:20, 20:40] = True
    write_mask(tmp_path / "m", "a", hole, {})
    data = {"images": str(tmp_path / "im"), "depths": str(tmp_path / "d"), "masks": str(tmp_path / "m")}
    raw = {"data": {**data, "size": [20, 32], "mono_prob": 0.0, "hflip": False}, "recipe": "release"}
    cfg = effective_config(config_from_dict(raw))
    assert cfg.data.augment == "release" and cfg.data.rescale_mode == "uniform"
    ds = CompletionDataset(cfg.data)
    scales = []
    for e in range(30):
        ds.set_epoch(e)
        it = ds[0]
        t = it["target"][0][it["valid"][0] > 0]
        assert float(t.max()) <= 10.0 + 1e-4 and float(t.min()) >= 1e-3  # inside [min, max] depth
        scales.append(float(t.max()) / 4.0)
        assert float(it["rgb"][:, :, :4].max()) < 0.05  # the stripe is still at the left edge: no crop
    # s ~ U[1e-3 / 1, 10 / 4]: spread over the whole allowed range
    assert min(scales) < 0.6 and max(scales) > 1.9


def test_release_warp_pivots_one_unit_ahead():
    depth = np.full((32, 48), 4.0, np.float32)
    depth[8:24, 16:32] = 2.0
    rng = np.random.default_rng(0)
    _, meta_ours = warped_hole_mask(depth, rng, WarpConfig(renderer="points"))
    _, meta_rel = warped_hole_mask(depth, np.random.default_rng(0), WarpConfig(renderer="points", pivot=1.0))
    assert meta_ours["pivot_depth"] == pytest.approx(4.0) and meta_rel["pivot_depth"] == 1.0
