"""Classical depth completion, the first-view prior, depth files and the baselines."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.backends.depth import DepthCompleter
from engine.backends.depth_baselines import InterpolationCompleter, ScaleShiftAligned, ZeroKnownMonocular
from engine.backends.depth_classical import METHODS, ClassicalDepthCompleter, NearestFillCompleter
from engine.backends.depth_file import load_depth_file
from engine.backends.depth_prior import SceneDepthPrior
from splat.errors import StitchError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
H, W = 48, 64


def _two_surfaces() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A red foreground block (1 m) on the left, a blue wall (3 m) on the right, with a hole in the wall
    right next to the block, as a disocclusion leaves it."""
    image = np.zeros((H, W, 3), np.float32)
    image[:, :24] = (0.9, 0.1, 0.1)
    image[:, 24:] = (0.1, 0.2, 0.9)
    gt = np.where(np.arange(W)[None, :] < 24, 1.0, 3.0).repeat(H, 0).astype(np.float32)
    mask = np.ones((H, W), bool)
    mask[10:40, 24:40] = False
    return image, gt, mask, np.where(mask, gt, 0.0).astype(np.float32)


@pytest.mark.parametrize("method", METHODS)
def test_contract_known_pixels_exact_positive_float32(method):
    rng = np.random.default_rng(0)
    image = rng.random((H, W, 3)).astype(np.float32)
    depth = (1.0 + rng.random((H, W)) * 3).astype(np.float32)
    mask = rng.random((H, W)) > 0.4
    mask[:, 40:] = False  # a large side region to extrapolate, as after a yaw
    completer = ClassicalDepthCompleter(method=method)
    assert isinstance(completer, DepthCompleter)
    out = completer(image, np.where(mask, depth, 0.0), mask)
    assert out.dtype == np.float32 and out.shape == (H, W)
    assert np.isfinite(out).all() and (out > 0).all()
    np.testing.assert_array_equal(out[mask], depth[mask])
    # Filled values stay within the range the known depth suggests.
    assert out.min() >= depth[mask].min() * 0.5 - 1e-6 and out.max() <= depth[mask].max() * 4 + 1e-6
    assert completer.describe()["method"] == method


@pytest.mark.parametrize("method", METHODS)
def test_a_wall_with_a_hole_is_filled_with_the_wall(method):
    image = np.full((H, W, 3), 0.5, np.float32)
    depth = np.full((H, W), 2.5, np.float32)
    mask = np.ones((H, W), bool)
    mask[12:30, 20:50] = False
    out = ClassicalDepthCompleter(method=method)(image, np.where(mask, depth, 0), mask)
    np.testing.assert_allclose(out, 2.5, rtol=1e-4)


def test_colour_guides_the_fill_to_the_surface_it_belongs_to():
    """The default (colour-geodesic) fills a disocclusion from the wall of the same colour; nearest fill
    smears the foreground into it."""
    image, gt, mask, known = _two_surfaces()
    hole = ~mask
    ours = ClassicalDepthCompleter()(image, known, mask)
    nearest = NearestFillCompleter()(image, known, mask)
    np.testing.assert_allclose(ours[hole], 3.0, rtol=1e-3)
    assert np.abs(nearest[hole] - gt[hole]).mean() > 0.3


def test_empty_mask_gives_the_scene_prior_and_full_mask_the_input():
    rng = np.random.default_rng(1)
    image = rng.random((H, W, 3)).astype(np.float32)
    completer = ClassicalDepthCompleter()
    prior = completer(image, np.zeros((H, W), np.float32), np.zeros((H, W), bool))
    np.testing.assert_array_equal(prior, SceneDepthPrior()(image))
    depth = np.full((H, W), 1.5, np.float32)
    np.testing.assert_array_equal(completer(image, depth, np.ones((H, W), bool)), depth)


def test_bad_shapes_and_methods_are_stitch_errors():
    with pytest.raises(StitchError, match="same"):
        ClassicalDepthCompleter()(np.zeros((H, W, 3)), np.zeros((H, W)), np.zeros((H, W + 1), bool))
    with pytest.raises(StitchError, match="image"):
        ClassicalDepthCompleter()(np.zeros((H, W)), np.zeros((H, W)), np.zeros((H, W), bool))
    with pytest.raises(StitchError, match="choose one of"):
        ClassicalDepthCompleter(method="magic")


# --- the prior ------------------------------------------------------------------------------------


def test_prior_is_a_ground_plane_under_a_far_wall():
    image = np.full((96, 128, 3), 0.4, np.float32)
    d = SceneDepthPrior(subject_gain=0.0, bright_gain=0.0, guide_strength=0.0)(image)
    assert d.dtype == np.float32 and (d > 0).all()
    col = d[:, 64]
    assert col[-1] < col[70] < col[50]  # the floor recedes towards the horizon
    np.testing.assert_allclose(col[:40], col[0], rtol=1e-3)  # above the horizon: the back wall
    assert d.min() >= 0.5 and d.max() <= 20.0
    np.testing.assert_array_equal(
        d, SceneDepthPrior(subject_gain=0.0, bright_gain=0.0, guide_strength=0.0)(image)
    )


def test_blue_sky_makes_an_outdoor_layout_with_far_sky():
    image = np.full((96, 128, 3), 0.35, np.float32)
    image[:30] = (0.35, 0.6, 0.95)  # clear blue sky
    prior = SceneDepthPrior()
    cues = prior.analyse(image)
    assert cues["outdoor"] and cues["sky"][:25].all() and not cues["sky"][40:].any()
    d = prior(image)
    assert d[:20].min() > 15.0 and d[-1].max() < 8.0


@pytest.fixture
def photos() -> list[Path]:
    files = sorted((SHARED / "photos").glob("*.jpeg"))
    if not files:
        pytest.skip("shared photos not present")
    return files


def test_prior_on_real_photos_is_smooth_and_plausible(photos):
    from engine.images import load_photo

    outdoor = {}
    for path in photos:
        image = load_photo(path, 256)
        d = SceneDepthPrior()(image)
        assert d.min() >= 0.5 and d.max() <= 20.0
        assert d[-1].mean() < d[image.shape[0] // 2].mean()  # the bottom of a photo is nearer
        inv = 1.0 / d
        # Smooth: no jumps between neighbouring pixels except at the sky line.
        jump = np.abs(np.diff(inv, axis=1)).max()
        assert jump < 0.2 * inv.max()
        outdoor[path.name[:19]] = SceneDepthPrior().analyse(image)["outdoor"]
    assert outdoor["photo-1469559845082"]  # the canyon under a blue sky
    assert not outdoor["photo-1499916078039"]  # the bedroom


# --- depth files ----------------------------------------------------------------------------------


def test_depth_file_png_in_mm_and_npy_in_metres(tmp_path):
    mm = np.full((24, 32), 1500, np.uint16)
    mm[0, 0] = 0
    cv2.imwrite(str(tmp_path / "d.png"), mm)
    d = load_depth_file(tmp_path / "d.png", (48, 64))  # resized x2, nearest
    assert d.shape == (48, 64) and d.dtype == np.float32
    assert d[10, 10] == 1.5 and d[0, 0] == 0.0 and d[1, 1] == 0.0 and d[2, 2] == 1.5
    np.save(tmp_path / "d.npy", np.full((48, 64), 2.25, np.float64))
    np.testing.assert_array_equal(load_depth_file(tmp_path / "d.npy", (48, 64)), 2.25)


def test_depth_file_errors_are_one_line_stitch_errors(tmp_path):
    np.save(tmp_path / "nan.npy", np.full((48, 64), np.nan))
    np.save(tmp_path / "rgb.npy", np.ones((48, 64, 3)))
    np.save(tmp_path / "wide.npy", np.ones((10, 64)))
    cv2.imwrite(str(tmp_path / "eight.png"), np.ones((48, 64), np.uint8))
    (tmp_path / "d.txt").write_text("1 2 3")
    cases = {
        "nan.npy": "NaN",
        "rgb.npy": "2D",
        "wide.npy": "aspect",
        "eight.png": "16-bit",
        "d.txt": "PNG",
        "missing.npy": "does not exist",
    }
    for name, words in cases.items():
        with pytest.raises(StitchError, match=words):
            load_depth_file(tmp_path / name, (48, 64))


# --- baselines ------------------------------------------------------------------------------------


def test_interpolation_is_linear_across_a_hole():
    xx = np.arange(W, dtype=np.float32)[None, :].repeat(H, 0)
    depth = 1.0 + 0.05 * xx  # a slanted plane (linear in depth along rows)
    mask = np.ones((H, W), bool)
    mask[10:30, 20:40] = False
    out = InterpolationCompleter()(np.zeros((H, W, 3), np.float32), np.where(mask, depth, 0), mask)
    np.testing.assert_allclose(out, depth, rtol=1e-4)


def test_zero_known_monocular_ignores_the_known_depth():
    image, _, mask, known = _two_surfaces()
    mono = ZeroKnownMonocular(ClassicalDepthCompleter())
    np.testing.assert_array_equal(mono(image, known, mask), SceneDepthPrior()(image))


def test_scale_shift_aligned_recovers_a_metric_map_from_a_relative_one():
    image, gt, mask, known = _two_surfaces()
    relative = lambda img: (0.5 / gt + 0.1).astype(np.float32)  # noqa: E731  (affine in inverse depth)
    aligned = ScaleShiftAligned(relative, space="inverse", pred_is_inverse=True)(image, known, mask)
    np.testing.assert_allclose(aligned, gt, rtol=1e-4)
    a = ScaleShiftAligned(relative, space="inverse", pred_is_inverse=True).alignment(image, known, mask)
    assert a.scale == pytest.approx(2.0, rel=1e-4) and a.n_points == int(mask.sum())


# --- real data: the measured ordering -------------------------------------------------------------


def _score_real_pair(folder: str, frame_i: str, frame_j: str) -> dict[str, dict[str, float]]:
    root = SHARED / "rgbd" / folder
    if not root.is_dir():
        pytest.skip("shared RGB-D data not present")
    from engine.bench.metrics import depth_metrics
    from engine.bench.partial_depth import render_partial_depth
    from engine.bench.rgbd import load_rgbd_sequence

    seq = load_rgbd_sequence(root)
    names = [f.name for f in seq.frames]
    src, dst = seq.load(names.index(frame_i)), seq.load(names.index(frame_j))
    part = render_partial_depth(src, dst)
    scores = {}
    for name, completer in {
        "classical": ClassicalDepthCompleter(),
        "nearest": NearestFillCompleter(),
        "interpolation": InterpolationCompleter(),
    }.items():
        pred = completer(dst.image, part.known_depth, part.covered)
        scores[name] = depth_metrics(pred, dst.depth, part.covered)
    return scores


def test_measured_ordering_on_a_real_redkitchen_pair():
    """Measured on all 20 gap-5 redkitchen pairs (benchmark protocol 2: frame i seeded as generation seeds a
    view): classical and nearest are close in MAE (0.0544 vs 0.0561 m, classical wins 11 of 20 pairs) while
    classical has the lower RMSE on 19 of 20 (fewer gross errors), and interpolation is worse than both on
    every pair. This pair shows the same ordering (MAE 0.081 vs 0.086 m, RMSE 0.201 vs 0.232)."""
    s = _score_real_pair("redkitchen_dev", "frame-000036", "frame-000046")
    assert s["classical"]["rmse"] < 0.95 * s["nearest"]["rmse"], s
    assert s["classical"]["mae"] < 1.05 * s["nearest"]["mae"], s  # never clearly worse than the simple fill
    assert s["classical"]["mae"] < 0.8 * s["interpolation"]["mae"], s


def test_classical_beats_nearest_on_a_real_icl_pair():
    """Where colour is aligned with depth (ICL-NUIM, as in the pipeline), colour-guided propagation wins
    clearly: 0.054 against 0.079 m MAE over the gap-2 pairs; this pair 0.060 against 0.087."""
    s = _score_real_pair("icl_livingroom_5", "00000", "00002")
    assert s["classical"]["mae"] < 0.8 * s["nearest"]["mae"] < 0.8 * s["interpolation"]["mae"], s
