"""Global scale & shift alignment (engine/backends/depth_align.py)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.backends.depth_align import align_scale_shift, estimate_alignment
from splat.errors import StitchError


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:48, 0:64]
    gt = 1.5 + 0.04 * xx + 0.02 * yy + 0.2 * rng.random((48, 64))
    mask = xx < 40
    return gt.astype(np.float32), mask


def test_recovers_scale_and_shift_in_depth():
    gt, mask = _scene()
    pred = (gt - 0.3) / 2.5  # depth up to an affine map
    out = align_scale_shift(pred, np.where(mask, gt, 0), mask, space="depth")
    np.testing.assert_allclose(out, gt, rtol=1e-4)


def test_recovers_affine_disparity_in_inverse_space():
    gt, mask = _scene(1)
    disparity = 3.0 / gt + 0.05  # what relative models (MiDaS-like) output
    out = align_scale_shift(disparity, np.where(mask, gt, 0), mask, space="inverse", pred_is_inverse=True)
    np.testing.assert_allclose(out, gt, rtol=1e-4)


def test_robust_fit_ignores_outliers_that_break_least_squares():
    gt, mask = _scene(2)
    pred = gt * 0.5
    known = np.where(mask, gt, 0).astype(np.float32)
    known[-10:, 20:40] = 30.0  # a block of wrong known depth (e.g. flying pixels)
    robust = align_scale_shift(pred, known, mask, robust=True)
    plain = align_scale_shift(pred, known, mask, robust=False)
    err_r = np.abs(robust - gt)[~mask].mean()
    err_p = np.abs(plain - gt)[~mask].mean()
    assert err_r < 1e-3 < err_p


def test_output_positive_and_empty_mask_passthrough():
    gt, mask = _scene(3)
    out = align_scale_shift(gt, np.zeros_like(gt), np.zeros_like(mask))
    np.testing.assert_allclose(out, gt)
    a = estimate_alignment(gt, np.zeros_like(gt), np.zeros_like(mask))
    assert a.n_points == 0
    # A fit that would turn far pixels negative is clamped positive.
    pred = np.linspace(0.0, 1.0, 64 * 48).reshape(48, 64).astype(np.float32)
    out = align_scale_shift(pred, np.where(mask, 5.0 - 4.0 * pred, 0), mask)
    assert (out > 0).all() and np.isfinite(out).all()


def test_shape_mismatch_is_a_stitch_error():
    with pytest.raises(StitchError, match="same"):
        align_scale_shift(np.ones((4, 4)), np.ones((4, 5)), np.ones((4, 4), bool))
    with pytest.raises(StitchError, match="space"):
        align_scale_shift(np.ones((4, 4)), np.ones((4, 4)), np.ones((4, 4), bool), space="log")
