"""Coverage / inpainting masks and depth-edge ("noodle") removal (engine/fusion.py)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from engine.fusion import coverage_masks, depth_edges, disk, remove_depth_noodles


def test_disk_matches_the_usual_structuring_element():
    assert disk(1).sum() == 5  # the cross
    assert disk(2).sum() == 13
    assert disk(2)[0, 2] and not disk(2)[0, 1]


def test_coverage_erodes_holes_by_two_and_masks_are_complements():
    alpha = np.ones((40, 50), np.float32)
    alpha[10:20, 15:30] = 0.0  # a hole
    covered, inpaint = coverage_masks(alpha)
    # The hole grows by exactly 2 px on every side, never more (disk of radius 2).
    grown = ndimage.binary_dilation(alpha <= 0.5, structure=disk(2))
    np.testing.assert_array_equal(~covered, grown)
    np.testing.assert_array_equal(inpaint, ~covered)
    assert covered[7, 20] and not covered[8, 20] and not covered[21, 20] and covered[22, 20]


def test_image_border_is_not_a_hole():
    alpha = np.ones((20, 20), np.float32)
    covered, inpaint = coverage_masks(alpha)
    assert covered.all() and not inpaint.any()


def test_threshold_and_radii_are_honoured():
    alpha = np.full((30, 30), 0.6, np.float32)
    alpha[:, :10] = 0.4
    covered, inpaint = coverage_masks(alpha, erode_px=0, dilate_px=3, threshold=0.5)
    assert covered[:, 10:].all() and not covered[:, :10].any()
    assert inpaint[:, :13].all() and not inpaint[:, 13:].any()
    covered, _ = coverage_masks(alpha, threshold=0.7)
    assert not covered.any()


def test_noodles_on_a_depth_step_are_refilled_from_each_side():
    depth = np.full((40, 60), 2.0, np.float32)
    depth[:, 30:] = 8.0  # foreground/background step
    depth[:, 29:31] = 5.0  # mixed "noodle" pixels between them
    clean, invalid = remove_depth_noodles(depth)
    assert invalid[:, 28:32].all()  # the edge band was replaced...
    assert not invalid[:, :20].any() and not invalid[:, 40:].any()  # ...and nothing far from it
    assert set(np.unique(clean)) == {2.0, 8.0}  # no in-between depth remains
    np.testing.assert_array_equal(clean[:, :20], 2.0)
    np.testing.assert_array_equal(clean[:, 45:], 8.0)


def test_smooth_depth_is_left_alone():
    yy, xx = np.mgrid[0:40, 0:60]
    depth = (2.0 + 0.01 * xx + 0.005 * yy).astype(np.float32)  # a gentle slope
    clean, invalid = remove_depth_noodles(depth)
    assert not invalid.any()
    np.testing.assert_array_equal(clean, depth)


def test_edge_measure_is_normalised_max_minus_min():
    depth = np.ones((10, 10), np.float32)
    depth[5:, :] = 3.0
    e = depth_edges(depth)
    assert e.max() == 1.0 and e[0, 0] == 0.0 and e[4, 3] == 1.0 and e[5, 3] == 1.0
