"""The paper's datasets in their distributed layouts (tiny fakes built here): NYU Depth v2 labelled .mat
(HDF5) + splits.mat, the BTS "sync" tree + split file, a Places365 tree + file list; teacher -> masks -> fit
on a weighted mixture; teacher bookkeeping; a ZoeDepth teacher and ZoeDepth initialisation without
torchvision."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("h5py")

from completion.training.build import build_model
from completion.training.config import config_from_dict
from completion.training.data import CompletionDataset, DataConfig
from completion.training.depth_io import read_depth
from completion.training.log import read_log
from completion.training.masks import MaskJob, WarpConfig, run_masks
from completion.training.sources import SourceSpec, list_items
from completion.training.teacher import TeacherJob, run_teacher
from completion.training.train import fit
from splat.errors import StitchError

H, W = 40, 56  # a tiny "640x480" frame


def _frame(rng, i: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 [H, W, 3] with NYU's white border (6 px) and depth [H, W] metres (0 on the border)."""
    img = (rng.random((H, W, 3)) * 200).astype(np.uint8)
    yy, xx = np.mgrid[0:H, 0:W]
    depth = (1.0 + 0.05 * xx + 0.5 * i + 0.5 * ((yy // 10 + xx // 14) % 2)).astype(np.float32)
    img[:6], img[-6:], img[:, :6], img[:, -6:] = 255, 255, 255, 255
    depth[:6], depth[-6:], depth[:, :6], depth[:, -6:] = 0, 0, 0, 0
    return img, depth


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    import h5py
    from scipy.io import savemat

    root = tmp_path_factory.mktemp("layouts")
    rng = np.random.default_rng(0)
    frames = [_frame(rng, i) for i in range(5)]
    # NYU labelled .mat: MATLAB v7.3 stores images [N, 3, W, H] and depths [N, W, H] (column-major transposed)
    with h5py.File(root / "nyu_depth_v2_labeled.mat", "w") as f:
        f["images"] = np.stack([im.transpose(2, 1, 0) for im, _ in frames])
        f["depths"] = np.stack([d.T for _, d in frames])
    savemat(root / "splits.mat", {"trainNdxs": np.array([[1], [2], [4]]), "testNdxs": np.array([[3], [5]])})
    # BTS sync: ROOT/<scene>/rgb_x.jpg + sync_depth_x.png (mm), two scenes with the same file names
    sync = root / "sync"
    lines = []
    for k, (im, d) in enumerate(frames[:4]):
        scene, n = f"scene_{k % 2:04d}a", k // 2
        (sync / scene).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(sync / scene / f"rgb_{n:05d}.jpg"), im[..., ::-1])
        cv2.imwrite(str(sync / scene / f"sync_depth_{n:05d}.png"), (d * 1000).astype(np.uint16))
        lines.append(f"/{scene}/rgb_{n:05d}.jpg /{scene}/sync_depth_{n:05d}.png 518.8579")
    (root / "nyudepthv2_train_files_with_gt.txt").write_text("\n".join(lines) + "\n")
    # Places365: data_256/<letter>/<class>[/<sub>]/0000000k.jpg + the standard file list
    places = root / "data_256"
    rels = ["a/airfield/00000001.jpg", "a/apartment_building/outdoor/00000001.jpg", "b/bedroom/00000001.jpg"]
    for k, rel in enumerate(rels):
        (places / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(places / rel), (rng.random((H, W, 3)) * 255).astype(np.uint8))
        del k
    (root / "places365_train_standard.txt").write_text("".join(f"/{r} {i}\n" for i, r in enumerate(rels)))
    return root, frames


def test_nyu_mat_reads_the_official_split_and_crops_the_white_border(datasets):
    root, frames = datasets
    items = list_items(
        SourceSpec(str(root / "nyu_depth_v2_labeled.mat"), split_file=str(root / "splits.mat"))
    )
    assert [it.id for it in items] == ["nyu_0001", "nyu_0002", "nyu_0004"]  # 1-based, train half only
    rgb, gt = items[2].load_rgb(), items[2].load_gt_depth()
    assert rgb.shape == (H - 16, W - 16, 3) and gt.shape == (H - 16, W - 16)  # 8 px off every side
    assert rgb.max() < 0.99  # the white border is gone
    np.testing.assert_allclose(gt, frames[3][1][8:-8, 8:-8])  # frame 4 (1-based), same pixels
    K = np.array(items[0].intrinsics())
    assert K[0, 2] == pytest.approx(325.5824 - 8) and K[0, 0] == pytest.approx(518.8579)
    test = list_items(
        SourceSpec(str(root / "nyu_depth_v2_labeled.mat"), "nyu-mat", str(root / "splits.mat"), "test")
    )
    assert [it.id for it in test] == ["nyu_0003", "nyu_0005"]


def test_bts_sync_ids_are_unique_across_scenes(datasets):
    root, frames = datasets
    spec = SourceSpec(str(root / "sync"), split_file=str(root / "nyudepthv2_train_files_with_gt.txt"))
    assert spec.resolved_layout() == "nyu-sync"
    items = list_items(spec)
    ids = [it.id for it in items]
    assert ids == ["scene_0000a__rgb_00000", "scene_0001a__rgb_00000", "scene_0000a__rgb_00001",
                   "scene_0001a__rgb_00001"]  # fmt: skip
    np.testing.assert_allclose(items[1].load_gt_depth(), frames[1][1][8:-8, 8:-8], atol=1e-3)  # millimetres


def test_places_tree_and_file_list_give_the_same_items(datasets):
    root, _ = datasets
    tree = list_items(SourceSpec(str(root / "data_256")))
    listed = list_items(
        SourceSpec(str(root / "data_256"), split_file=str(root / "places365_train_standard.txt"))
    )
    assert sorted(it.id for it in tree) == sorted(it.id for it in listed)
    assert "a__apartment_building__outdoor__00000001" in {it.id for it in tree}
    assert tree[0].load_rgb().shape == (H, W, 3)  # no border crop outside NYU
    with pytest.raises(StitchError, match="missing"):
        bad = root / "bad_list.txt"
        bad.write_text("/a/airfield/00000001.jpg 0\n/z/zoo/00000009.jpg 1\n")
        list_items(SourceSpec(str(root / "data_256"), "places365", str(bad)))


def test_teacher_masks_fit_on_a_weighted_nyu_places_mixture(datasets, tmp_path):
    from tiny_learned_models import make_tiny_depth_anything

    root, frames = datasets
    torch.set_num_threads(1)
    teacher = str(make_tiny_depth_anything(tmp_path / "teacher"))
    nyu = SourceSpec(str(root / "nyu_depth_v2_labeled.mat"), split_file=str(root / "splits.mat"))
    places = SourceSpec(str(root / "data_256"), split_file=str(root / "places365_train_standard.txt"))
    # NYU: a relative teacher fitted to the ground truth (metric); Places: relative, no ground truth
    s = run_teacher(TeacherJob(nyu.root, str(tmp_path / "nyu_depth"), teacher, source=nyu))
    assert s["written"] == 3
    d, meta = read_depth(tmp_path / "nyu_depth", "nyu_0004")
    gt = frames[3][1][8:-8, 8:-8]
    assert meta["kind"] == "metric" and meta["aligned"] == "gt-lstsq-disparity" and "K" in meta
    assert abs(np.median(d[gt > 0]) - np.median(gt[gt > 0])) < 0.5  # metric scale, from the fit
    run_teacher(TeacherJob(places.root, str(tmp_path / "pl_depth"), teacher, source=places))
    assert read_depth(tmp_path / "pl_depth", "a__airfield__00000001")[1]["kind"] == "relative"
    run_masks(
        MaskJob(str(tmp_path / "pl_depth"), str(tmp_path / "pl_masks"), warp=WarpConfig(renderer="points"))
    )

    sources = [
        {"root": nyu.root, "split_file": nyu.split_file, "depths": str(tmp_path / "nyu_depth"),
         "weight": 3.0},
        {"root": places.root, "split_file": places.split_file, "depths": str(tmp_path / "pl_depth"),
         "masks": str(tmp_path / "pl_masks"), "weight": 1.0},
    ]  # fmt: skip
    data = DataConfig(sources=tuple(sources), size=(32, 48), mono_prob=0.5)
    ds = CompletionDataset(data)
    assert len(ds) == 6
    picks = [ds.source_of(i) for e in range(20) for i in (ds.set_epoch(e), range(len(ds)))[1]]
    assert 0.65 < picks.count(0) / len(picks) < 0.85  # weight 3 : 1
    masked = [ds[i] for i in range(len(ds)) if ds[i]["mono"] == 0]
    assert masked and all(0 < float(b["known"].mean()) < 1 for b in masked)  # Places masks on NYU frames

    raw = {"data": {"sources": sources, "size": [32, 48]}, "out_dir": str(tmp_path / "run"), "batch_size": 2,
           "max_steps": 3, "lr": 3e-3}  # fmt: skip
    res = fit(config_from_dict(raw))
    assert res["step"] == 3 and np.isfinite(res["final_loss"])
    assert [int(r["step"]) for r in read_log(tmp_path / "run" / "log.csv")] == [1, 2, 3]


def test_teacher_notices_a_different_teacher_and_gt_needs_ground_truth(datasets, tmp_path):
    root, _ = datasets
    nyu = SourceSpec(str(root / "nyu_depth_v2_labeled.mat"), split_file=str(root / "splits.mat"))
    out = str(tmp_path / "depth")
    assert run_teacher(TeacherJob(nyu.root, out, "gt", source=nyu))["written"] == 3
    assert run_teacher(TeacherJob(nyu.root, out, "gt", source=nyu))["skipped"] == 3  # same teacher: done
    with pytest.raises(StitchError, match="another teacher"):
        run_teacher(TeacherJob(nyu.root, out, "marigold:prs-eth/marigold-depth-v1-1", source=nyu))
    with pytest.raises(StitchError, match="another teacher"):  # same spec, other options
        run_teacher(TeacherJob(nyu.root, out, "gt", relative_range=20.0, source=nyu))
    places = SourceSpec(str(root / "data_256"))
    with pytest.raises(StitchError, match="no ground-truth depth"):
        run_teacher(TeacherJob(places.root, str(tmp_path / "p"), "gt", source=places))


def _tiny_zoedepth(folder: Path) -> Path:
    """A tiny 3-channel transformers ZoeDepth + its image processor (PIL backend), saved like a hub model."""
    from transformers import ZoeDepthConfig, ZoeDepthForDepthEstimation
    from transformers.models.zoedepth.image_processing_pil_zoedepth import ZoeDepthImageProcessorPil

    from completion.network.config import tiny_zoedepth_dict

    d = tiny_zoedepth_dict()
    d["backbone_config"]["num_channels"] = 3
    torch.manual_seed(0)
    ZoeDepthForDepthEstimation(ZoeDepthConfig(**d)).save_pretrained(folder)
    ZoeDepthImageProcessorPil(size={"height": 32, "width": 32}, ensure_multiple_of=16).save_pretrained(folder)
    return folder


def test_zoedepth_teacher_and_init_from_a_zoedepth_folder_or_hub_id(tmp_path, monkeypatch):
    zoe = _tiny_zoedepth(tmp_path / "models" / "Intel" / "zoedepth-nyu-kitti")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    cv2.imwrite(str(imgs / "a.png"), (np.random.default_rng(1).random((30, 40, 3)) * 255).astype(np.uint8))
    run_teacher(TeacherJob(str(imgs), str(tmp_path / "depth"), str(zoe)))  # no torchvision needed
    depth, meta = read_depth(tmp_path / "depth", "a")
    assert meta["kind"] == "metric" and depth.shape == (30, 40) and (depth > 0).all()

    model = build_model(config_from_dict({"model": str(zoe), "data": {"size": [32, 48]}}))
    assert model.zoe.config.backbone_config.num_channels == 5  # widened 3 -> 5, ready to fine-tune
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    by_id = build_model(config_from_dict({"model": "Intel/zoedepth-nyu-kitti",
                                          "model_path": str(tmp_path / "models"),
                                          "data": {"size": [32, 48]}}))  # fmt: skip
    for k, v in model.state_dict().items():
        torch.testing.assert_close(by_id.state_dict()[k], v, msg=k)
    with pytest.raises(StitchError, match="depth_anything"):
        from tiny_learned_models import make_tiny_depth_anything

        build_model(config_from_dict({"model": str(make_tiny_depth_anything(tmp_path / "da"))}))
    assert json.loads((zoe / "config.json").read_text())["model_type"] == "zoedepth"


def test_cli_teacher_and_masks_on_the_nyu_mat(datasets, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    root, _ = datasets
    mat, splits = str(root / "nyu_depth_v2_labeled.mat"), str(root / "splits.mat")
    r = CliRunner().invoke(app, ["train", "teacher", mat, str(tmp_path / "d"), "--teacher", "gt",
                                 "--split-file", splits, "--split", "test", "--border", "4"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["written"] == 2
    depth, meta = read_depth(tmp_path / "d", "nyu_0005")
    assert depth.shape == (H - 8, W - 8) and meta["teacher"] == "gt" and meta["spec"] == "gt"
    r = CliRunner().invoke(app, ["train", "masks", str(tmp_path / "d"), str(tmp_path / "m"), "--renderer",
                                 "points", "--pivot", "1", "--snap-depth", "15"])  # fmt: skip
    assert r.exit_code == 0, r.output
    mask_meta = json.loads((tmp_path / "m" / "nyu_0003.json").read_text())
    assert mask_meta["pivot_depth"] == 1.0 and mask_meta["snap_depth"] == 15.0
