"""Noodle refill as the release does it: layered max of the 8 neighbours (issue 16, item 4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from engine.fusion import layered_max_fill, nearest_fill, remove_depth_noodles

REDKITCHEN = Path(__file__).resolve().parents[2] / "shared/data/rgbd/redkitchen_dev"


def _release_fill(img: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The release's nearest_neighbor_fill (utils/ops.py, erosion done by the caller), transcribed."""
    img_ = img.astype(np.float64).copy()
    img_[~valid] = np.nan
    distance = ndimage.distance_transform_bf(~valid, metric="cityblock")
    for d in np.unique(distance)[1:]:
        ii, jj = np.where(distance == d)
        ii_ = np.array([ii - 1, ii, ii + 1, ii - 1, ii, ii + 1, ii - 1, ii, ii + 1]).reshape(9, -1)
        jj_ = np.array([jj - 1, jj - 1, jj - 1, jj, jj, jj, jj + 1, jj + 1, jj + 1]).reshape(9, -1)
        ii_ = ii_.clip(0, img_.shape[0] - 1)
        jj_ = jj_.clip(0, img_.shape[1] - 1)
        img_[ii, jj] = np.nanmax(img_[ii_, jj_], axis=0)
    return img_


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_layered_max_fill_equals_the_release_loop(seed):
    rng = np.random.default_rng(seed)
    img = rng.uniform(0.5, 9.0, (23, 31))
    valid = rng.uniform(size=img.shape) < 0.15
    np.testing.assert_array_equal(layered_max_fill(img, valid), _release_fill(img, valid))


def test_small_case_by_hand():
    v = np.arange(1.0, 13.0).reshape(3, 4)
    valid = np.zeros((3, 4), bool)
    valid[0, 0] = valid[2, 3] = True
    # Layer 1 takes the max of its valid neighbours; (1, 1) sees 12 through (2, 2) filled in layer 1.
    expected = np.array([[1.0, 1.0, 12.0, 12.0], [1.0, 12.0, 12.0, 12.0], [1.0, 12.0, 12.0, 12.0]])
    np.testing.assert_array_equal(layered_max_fill(v, valid), expected)


def test_fill_grows_from_each_side_and_ties_fall_to_the_far_side():
    # 9 invalid columns between a 2 m foreground and an 8 m background: layers advance from both sides, and
    # the middle column (equally far from both) takes the max: the background.
    depth = np.full((6, 20), 2.0)
    depth[:, 10:] = 8.0
    valid = np.ones_like(depth, bool)
    valid[:, 5:14] = False
    out = layered_max_fill(depth, valid)
    np.testing.assert_array_equal(out[0, 5:14], [2, 2, 2, 2, 8, 8, 8, 8, 8])
    np.testing.assert_array_equal(out[:, 5:14], np.broadcast_to(out[0, 5:14], (6, 9)))


def test_pipeline_noodle_removal_uses_the_release_fill_by_default():
    yy, xx = np.mgrid[0:40, 0:50]
    depth = np.where((yy - 20) ** 2 + (xx - 25) ** 2 < 12**2, 2.0, 6.0).astype(np.float32)  # a round object
    clean, invalid = remove_depth_noodles(depth)
    ref, _ = remove_depth_noodles(depth, fill="release")
    near, _ = remove_depth_noodles(depth, fill="nearest")
    np.testing.assert_array_equal(clean, ref)
    assert invalid.any() and (clean != near).any()


@pytest.mark.skipif(not REDKITCHEN.is_dir(), reason="7-Scenes dev frames not present")
def test_real_depth_release_fill_vs_nearest_numbers():
    # Numbers from benchmarks/bench_noodle_fill.py on 7-Scenes redkitchen frame 8 (640x480, sensor holes
    # pre-filled): 22,480 refilled pixels with sensor depth, 7,895 set differently by the two fills; MAE
    # against the sensor there: release max 0.0423 m, Euclidean nearest 0.0282 m.
    gt = np.asarray(Image.open(REDKITCHEN / "frame-000008.depth.png"), np.float64)
    gt[gt >= 65535] = 0
    gt /= 1000.0
    depth = nearest_fill(gt, gt > 0).astype(np.float32)
    a, invalid = remove_depth_noodles(depth)
    b, _ = remove_depth_noodles(depth, fill="nearest")
    score = invalid & (gt > 0)
    assert int(score.sum()) == 22480
    assert int((a != b)[score].sum()) == 7895
    assert float(np.abs(a - gt)[score].mean()) == pytest.approx(0.0423, abs=5e-5)
    assert float(np.abs(b - gt)[score].mean()) == pytest.approx(0.0282, abs=5e-5)


def test_unknown_fill_is_refused():
    with pytest.raises(ValueError, match="fill must be"):
        remove_depth_noodles(np.ones((8, 8), np.float32), fill="mean")
