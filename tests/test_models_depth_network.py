"""Completion network wrapper: padding, flip averaging, depth scaling, any size, the paper's checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from tiny_learned_models import make_tiny_completion

from completion.network.model import DepthCompletionModel
from engine.backends.depth import DepthCompleter
from engine.backends.depth_network import NetworkDepthCompleter, NetworkDepthConfig
from engine.backends.registry import build_depth_completer

H, W = 37, 53


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.set_num_threads(1)
    return make_tiny_completion(tmp_path_factory.mktemp("completion") / "net")


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    image = rng.random((H, W, 3)).astype(np.float32)
    mask = np.zeros((H, W), bool)
    mask[:, : W // 2] = True
    known = np.where(mask, 1.0 + rng.random((H, W)), 0.0).astype(np.float32)
    return image, known, mask


def test_any_size_in_same_size_out(folder):
    completer = build_depth_completer(str(folder), device="cpu")
    assert isinstance(completer, DepthCompleter) and completer.describe()["backend"] == "network"
    for h, w in [(37, 53), (8, 8), (5, 130)]:
        image = np.random.default_rng(h).random((h, w, 3)).astype(np.float32)
        out = completer(image, np.zeros((h, w), np.float32), np.zeros((h, w), bool))
        assert out.shape == (h, w) and out.dtype == np.float32 and np.isfinite(out).all() and (out > 0).all()


def test_plain_inference_equals_the_model_with_the_release_scaling(folder):
    model = DepthCompletionModel.from_pretrained(folder)
    completer = build_depth_completer(f"network:{folder}", device="cpu", pad=False, flip_average=False)
    image, known, mask = _inputs()
    rgb = torch.from_numpy(image).permute(2, 0, 1)[None]
    t = lambda a: torch.from_numpy(a)[None, None]  # noqa: E731
    with torch.no_grad():
        later = model(rgb, t(known), t(mask), depth_scaling=0.5)[0, 0].numpy()
        first = model(rgb, t(known * 0), t(mask & False), depth_scaling=1.0)[0, 0].numpy()
    np.testing.assert_allclose(completer(image, known, mask), later, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(completer(image, known * 0, mask & False), first, rtol=1e-5, atol=1e-6)


def test_flip_averaging_makes_the_prediction_mirror_symmetric(folder):
    image, known, mask = _inputs(1)
    flip = lambda a: np.ascontiguousarray(a[:, ::-1])  # noqa: E731
    on = build_depth_completer(str(folder), device="cpu")
    np.testing.assert_allclose(
        on(flip(image), flip(known), flip(mask)), flip(on(image, known, mask)), rtol=1e-5
    )
    off = build_depth_completer(str(folder), device="cpu", flip_average=False)
    assert np.abs(off(flip(image), flip(known), flip(mask)) - flip(off(image, known, mask))).max() > 1e-4


def test_padding_changes_the_borders_only_through_context(folder):
    image, known, mask = _inputs(2)
    padded = build_depth_completer(str(folder), device="cpu", flip_average=False)(image, known, mask)
    plain = build_depth_completer(str(folder), device="cpu", flip_average=False, pad=False)(
        image, known, mask
    )
    assert padded.shape == plain.shape == (H, W)
    assert np.abs(padded - plain).max() > 1e-4  # the reflect-padded context reaches the network


def test_invisible_stitch_checkpoint_in_original_naming_loads_through_the_registry(folder, tmp_path):
    from completion.network.checkpoint import save_original_checkpoint

    model = DepthCompletionModel.from_pretrained(folder)
    save_original_checkpoint(model, tmp_path / "invisible-stitch.pt")
    completer = build_depth_completer(
        "invisible-stitch", model_path=tmp_path, device="cpu", model_config=model.config
    )
    d = completer.describe()
    assert d["backend"] == "invisible-stitch" and d["model"]["key"] == "invisible-stitch"
    assert d["model_id"] == "paulengstler/invisible-stitch" and d["depth_scaling"] == 0.5
    image, known, mask = _inputs(3)
    reference = NetworkDepthCompleter(model, NetworkDepthConfig())(image, known, mask)
    np.testing.assert_allclose(completer(image, known, mask), reference, rtol=1e-5, atol=1e-6)
