"""Training data preparation: teacher depth files, warped / stroke masks, dataset samples, losses."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from completion.training.data import CompletionDataset, DataConfig
from completion.training.depth_io import read_depth, read_mask, write_depth
from completion.training.losses import completion_loss, known_mse_loss, silog_loss
from completion.training.masks import (
    MaskJob,
    WarpConfig,
    orbit_camera,
    render_coverage,
    run_masks,
    stroke_mask,
)
from completion.training.teacher import TeacherJob, run_teacher
from splat.cameras import Camera, intrinsics
from splat.errors import StitchError


def _box_scene(h=48, w=64) -> np.ndarray:
    d = np.full((h, w), 4.0, np.float32)
    d[h // 4 : 3 * h // 4, w // 3 : 2 * w // 3] = 1.5  # a box 1.5 m away in front of a wall at 4 m
    return d


# --- masks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("renderer", ["splat", "points"])
def test_warp_reveals_disocclusion_beside_the_box(renderer):
    d = _box_scene()
    cam = Camera(64, 48, intrinsics(64, 48), np.eye(4))
    cfg = WarpConfig(renderer=renderer)
    same = render_coverage(cam, d, orbit_camera(cam, 4.0, 0.0, 0.0, 1.0), cfg)
    assert same.all()  # no motion, nothing uncovered
    moved = ~render_coverage(cam, d, orbit_camera(cam, 4.0, 10.0, 0.0, 1.0), cfg)
    # yaw right about the wall: the box slides right in the image; the wall behind its left edge shows
    box_rows = slice(16, 32)
    left_strip = moved[box_rows, 16:26].mean()
    right_strip = moved[box_rows, 44:54].mean()
    assert left_strip > 0.3 and right_strip < 0.05
    assert moved[:, :10].mean() < 0.05  # the flat wall stays covered far from the box


def test_stroke_masks_are_random_and_partial():
    rng = np.random.default_rng(0)
    masks = [stroke_mask(60, 80, rng) for _ in range(5)]
    fr = [m.mean() for m in masks]
    assert all(0.005 < f < 0.9 for f in fr) and len({round(f, 4) for f in fr}) > 1


# --- teacher + masks on real photos -----------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, photos):
    from tiny_learned_models import make_tiny_depth_anything

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("prep")
    imgs = root / "images"
    imgs.mkdir()
    for p in photos[:3]:
        shutil.copy(p, imgs / p.name)
    teacher = make_tiny_depth_anything(root / "teacher")
    stats = run_teacher(TeacherJob(str(imgs), str(root / "depth"), str(teacher), fmt="png16"))
    masks = run_masks(MaskJob(str(root / "depth"), str(root / "masks"), warp=WarpConfig(max_side=48)))
    return root, stats, masks


def test_teacher_writes_depth_with_metadata_and_resumes(prepared):
    root, stats, _ = prepared
    assert stats["written"] == 3
    depth, meta = read_depth(root / "depth", sorted((root / "images").iterdir())[0].stem)
    assert depth.shape == (480, 720) and (depth > 0).all()
    assert meta["kind"] == "relative" and meta["format"] == "png16" and meta["teacher_output"] == "disparity"
    assert depth.min() >= 1.0 and depth.max() <= 10.0 + 1e-3  # relative depth spread over [1, range]
    # idempotent: a second run skips everything; a deleted sidecar is redone
    again = run_teacher(
        TeacherJob(str(root / "images"), str(root / "depth"), str(root / "teacher"), fmt="png16")
    )
    assert again["written"] == 0 and again["skipped"] == 3


def test_masks_written_for_every_depth_map(prepared):
    root, _, masks = prepared
    assert masks["written"] == 3
    stems = sorted(p.stem for p in (root / "images").iterdir())
    for s in stems:
        hole = read_mask(root / "masks", s)
        meta = json.loads((root / "masks" / f"{s}.json").read_text())
        assert hole.shape == (480, 720) and meta["type"] == "warped"
        assert abs(meta["yaw"]) <= 15 and abs(meta["pitch"]) <= 15 and 0.9 <= meta["dist_scale"] <= 1.1
        assert abs(hole.mean() - meta["hole_fraction"]) < 1e-6


def test_dataset_half_masked_half_monocular(prepared):
    root, _, _ = prepared
    cfg = DataConfig(
        images=str(root / "images"), depths=str(root / "depth"), masks=str(root / "masks"), size=(32, 48)
    )
    ds = CompletionDataset(cfg)
    items = []
    for epoch in range(6):
        ds.set_epoch(epoch)
        items += [ds[i] for i in range(len(ds))]
    mono = [it for it in items if it["mono"] > 0]
    masked = [it for it in items if it["mono"] == 0]
    assert 3 <= len(mono) <= 15 and len(masked) >= 3
    for it in mono:
        assert it["sparse"].abs().max() == 0 and it["known"].max() == 0
        assert it["rgb"].shape == (3, 32, 48) and it["rgb"].min() >= 0 and it["rgb"].max() <= 1
    medians, holes = [], []
    for it in masked:
        k = it["known"] > 0
        assert k.any()
        holes.append(float((~k).float().mean()))
        torch.testing.assert_close(it["sparse"][k], it["target"][k])  # known pixels show the target
        assert (it["sparse"][~k] == 0).all() and it["target"].max() <= 10.0
        medians.append(float(it["target"][it["valid"] > 0].median()))
    assert max(medians) / min(medians) > 1.3  # targets are randomly rescaled
    assert sum(h > 0.01 for h in holes) >= len(holes) // 2  # most crops contain part of the warp's hole
    # same (seed, epoch, index) -> same sample (resume replays the data exactly)
    ds.set_epoch(2)
    a, b = ds[1], ds[1]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_dataset_without_masks_is_a_clear_error(prepared):
    root, _, _ = prepared
    with pytest.raises(StitchError, match="no masks"):
        CompletionDataset(DataConfig(images=str(root / "images"), depths=str(root / "depth"), masks=""))


def test_depth_io_round_trip(tmp_path):
    d = np.random.default_rng(0).uniform(0.5, 9, (10, 12)).astype(np.float32)
    d[0, 0] = 0
    write_depth(tmp_path, "a", d, {"kind": "metric"}, fmt="png16")
    write_depth(tmp_path, "b", d, {"kind": "metric"}, fmt="npy")
    a, ma = read_depth(tmp_path, "a")
    b, _ = read_depth(tmp_path, "b")
    assert np.abs(a - d).max() <= 0.5e-3 + 1e-6 and ma["depth_scale"] == 1000.0
    assert np.array_equal(b, d)


# --- losses ----------------------------------------------------------------------------------------


def test_silog_is_scale_invariant_at_lambda_one_and_zero_when_exact():
    t = torch.rand(2, 1, 8, 8) + 0.5
    v = torch.ones_like(t)
    assert silog_loss(t, t, v).max() <= 0.011  # sqrt(eps) floor keeps the gradient finite
    assert silog_loss(3 * t, t, v, lam=1.0).max() <= 0.011
    assert silog_loss(3 * t, t, v, lam=0.85).min() > 1.0  # lambda 0.85 keeps part of the scale error


def test_known_mse_and_batch_mean_split_exactly():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(4, 1, 6, 6, generator=g) + 1
    batch = {
        "target": torch.rand(4, 1, 6, 6, generator=g) + 1,
        "valid": torch.ones(4, 1, 6, 6),
        "sparse": torch.rand(4, 1, 6, 6, generator=g) + 1,
        "known": (torch.rand(4, 1, 6, 6, generator=g) > 0.5).float(),
    }
    k = batch["known"][0] > 0
    mse0 = ((pred[0][k] - batch["sparse"][0][k]) ** 2).mean()
    torch.testing.assert_close(known_mse_loss(pred, batch["sparse"], batch["known"])[0], mse0)
    whole, _ = completion_loss(pred, batch)
    halves = [
        completion_loss(pred[s], {k2: v[s] for k2, v in batch.items()})[0] for s in (slice(0, 2), slice(2, 4))
    ]
    torch.testing.assert_close(whole, (halves[0] + halves[1]) / 2)  # what DDP's gradient averaging needs


def test_marigold_teacher_through_diffusers_pipeline(tmp_path):
    """The paper's teacher class (diffusers MarigoldDepthPipeline), tiny and random, loaded from a folder."""
    from diffusers import AutoencoderKL, DDIMScheduler, MarigoldDepthPipeline, UNet2DConditionModel
    from tiny_learned_models import _tiny_clip_tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel

    from completion.training.teacher import load_teacher

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=16,
        in_channels=8,  # image latent + depth latent
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=[8, 16],
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=16,
            intermediate_size=24,
            num_attention_heads=2,
            num_hidden_layers=1,
            vocab_size=64,
            max_position_embeddings=16,
            projection_dim=16,
        )
    )
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", prediction_type="v_prediction", steps_offset=1)
    MarigoldDepthPipeline(
        unet=unet,
        vae=vae,
        scheduler=scheduler,
        text_encoder=text,
        tokenizer=_tiny_clip_tokenizer(),
        prediction_type="depth",
        scale_invariant=True,
        shift_invariant=True,
        default_denoising_steps=2,
        default_processing_resolution=32,
    ).save_pretrained(tmp_path / "marigold")
    teacher = load_teacher(f"marigold:{tmp_path / 'marigold'}")
    image = np.random.default_rng(0).random((40, 60, 3)).astype(np.float32)
    depth = teacher(image)
    assert teacher.kind == "relative" and depth.shape == (40, 60)
    assert depth.min() >= 1.0 and depth.max() <= 10.0 + 1e-4 and depth.std() > 0.1
