"""Monocular depth + alignment: tiny transformers depth models loaded by local path through the factory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from tiny_learned_models import make_tiny_depth_anything

from engine.backends.depth import DepthCompleter
from engine.backends.registry import build_depth_completer
from splat.errors import StitchError

H, W = 33, 47


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("mono")
    relative = make_tiny_depth_anything(root / "relative", metric=False)
    metric = make_tiny_depth_anything(root / "metric", metric=True, seed=1)
    # Registry layout for the default monocular model (what `stitch models download --to root` writes).
    make_tiny_depth_anything(root / "depth-anything" / "Depth-Anything-V2-Small-hf", seed=2)
    return root, relative, metric


def _image(seed=0):
    return np.random.default_rng(seed).random((H, W, 3)).astype(np.float32)


def _known_left_half():
    mask = np.zeros((H, W), bool)
    mask[:, : W // 2] = True
    return mask


def test_relative_model_output_affine_in_inverse_depth_is_aligned_back_to_ground_truth(dirs):
    _, relative, _ = dirs
    completer = build_depth_completer(f"mono:{relative}", device="cpu")
    assert isinstance(completer, DepthCompleter)
    image = _image()
    raw = completer.predict(image)
    assert raw.std() > 1e-3 * raw.mean()  # a varied map, or the test would prove nothing
    gt = 1.0 / (0.3 * raw + 0.1)  # metres; the model is exactly affine in inverse depth
    mask = _known_left_half()
    depth = completer(image, np.where(mask, gt, 0.0).astype(np.float32), mask)
    assert completer.describe()["align_space"] == "inverse"
    np.testing.assert_allclose(depth[~mask], gt[~mask], rtol=1e-3)


def test_metric_model_aligned_in_depth_even_with_outliers(dirs):
    _, _, metric = dirs
    completer = build_depth_completer(f"mono:{metric}", device="cpu")
    assert completer.describe()["output_kind"] == "depth"
    image = _image(1)
    gt = 2.0 * completer.predict(image) + 0.5
    mask = _known_left_half()
    known = np.where(mask, gt, 0.0).astype(np.float32)
    bad = np.zeros_like(mask)
    bad[::5, : W // 2] = True  # 20% of the known pixels are wrong (a mis-rendered edge, say)
    known[bad] = 50.0
    depth = completer(image, known, mask)
    np.testing.assert_allclose(depth[~mask], gt[~mask], rtol=1e-3)
    assert completer.last_alignment.n_inliers < mask.sum()


def test_first_view_prior(dirs):
    _, relative, metric = dirs
    image = _image(2)
    none = np.zeros((H, W), np.float32), np.zeros((H, W), bool)
    met = build_depth_completer(f"mono:{metric}", device="cpu")
    np.testing.assert_allclose(met(image, *none), met.predict(image))  # metric output is used as is
    rel = build_depth_completer(f"mono:{relative}", device="cpu", prior_near=1.0, prior_far=10.0)
    depth = rel(image, *none)
    raw = rel.predict(image)
    assert depth.min() >= 1.0 - 1e-5 and depth.max() <= 10.0 + 1e-4
    near, far = np.unravel_index(raw.argmax(), raw.shape), np.unravel_index(raw.argmin(), raw.shape)
    assert depth[near] < depth[far]  # larger inverse depth = nearer


def test_default_mono_model_comes_from_the_registry(dirs):
    root, _, _ = dirs
    completer = build_depth_completer("mono", model_path=root, device="cpu")
    d = completer.describe()
    assert d["model"]["key"] == "depth-anything-v2-small"
    assert d["model_id"] == "depth-anything/Depth-Anything-V2-Small-hf"
    out = completer(_image(), np.zeros((H, W), np.float32), np.zeros((H, W), bool))
    assert out.shape == (H, W) and np.isfinite(out).all() and (out > 0).all()


def test_keep_known_and_bad_input(dirs):
    _, _, metric = dirs
    completer = build_depth_completer(f"mono:{metric}", device="cpu", keep_known=True)
    mask = _known_left_half()
    known = np.where(mask, 3.0, 0.0).astype(np.float32)
    depth = completer(_image(), known, mask)
    np.testing.assert_array_equal(depth[mask], 3.0)
    with pytest.raises(StitchError, match="must match"):
        completer(_image(), known[:5], mask)
    with pytest.raises(StitchError, match="unknown mono depth options"):
        build_depth_completer(f"mono:{metric}", device="cpu", no_such_option=1)


def test_zoedepth_mono_completer_runs_without_torchvision(tmp_path):
    """`--depth mono:<ZoeDepth folder>` used to crash: transformers 5 picks the torchvision processor and its
    ZoeDepth post-processing; the completer now loads the PIL processor and resizes the output itself."""
    from test_completion_layouts import _tiny_zoedepth

    folder = _tiny_zoedepth(tmp_path / "zoe")
    completer = build_depth_completer(f"mono:{folder}", device="cpu")
    rng = np.random.default_rng(0)
    image = rng.random((40, 56, 3)).astype(np.float32)
    known = np.zeros((40, 56), bool)
    known[:, :28] = True
    known_depth = np.where(known, 2.0, 0.0).astype(np.float32)
    depth = completer(image, known_depth, known)
    assert depth.shape == (40, 56) and np.isfinite(depth).all() and (depth > 0).all()
    # aligned to the known half: its median lands on the known 2 m
    assert np.median(depth[known]) == pytest.approx(2.0, rel=0.05)
