"""End to end on CPU: tiny teacher on real photos -> warped masks -> a few training steps -> checkpoint ->
--resume -> the trained model loads through the pipeline's `--depth PATH` path."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("transformers")

from completion.network.model import DepthCompletionModel
from completion.training.build import build_model
from completion.training.config import config_from_dict
from completion.training.data import CompletionDataset
from completion.training.log import read_log
from completion.training.losses import completion_loss
from completion.training.masks import MaskJob, WarpConfig, run_masks
from completion.training.teacher import TeacherJob, run_teacher
from completion.training.train import fit

STEPS = 6


@pytest.fixture(scope="module")
def run(tmp_path_factory, photos, shared_data):
    from tiny_learned_models import make_tiny_depth_anything

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("train")
    imgs = root / "images"
    imgs.mkdir()
    for p in photos[:4]:
        shutil.copy(p, imgs / p.name)
    teacher = make_tiny_depth_anything(root / "teacher")
    run_teacher(TeacherJob(str(imgs), str(root / "depth"), str(teacher)))
    run_masks(MaskJob(str(root / "depth"), str(root / "masks"), warp=WarpConfig(max_side=48)))
    raw = {
        "data": {
            "images": str(imgs),
            "depths": str(root / "depth"),
            "masks": str(root / "masks"),
            "size": [32, 48],
        },
        "out_dir": str(root / "run"),
        "batch_size": 2,
        "max_steps": STEPS,
        "lr": 3e-3,  # a from-scratch tiny model; the paper fine-tunes at 1.61e-4
        "ckpt_every": 3,
        "keep_checkpoints": 3,
        "val_rgbd": str(shared_data / "rgbd" / "redkitchen_dev"),
        "val_every": 3,
        "val_max_pairs": 1,
        "val_renderer": "points",
    }
    cfg_path = root / "train.json"
    cfg_path.write_text(json.dumps(raw))
    from cli import app

    res = CliRunner().invoke(app, ["train", "fit", str(cfg_path)])
    assert res.exit_code == 0, res.output
    return root, config_from_dict(raw), json.loads(res.output.strip().splitlines()[-1])


def _fixed_batch_loss(model, cfg) -> float:
    ds = CompletionDataset(cfg.data)
    ds.set_epoch(0)
    items = [ds[i] for i in range(len(ds))]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    with torch.no_grad():
        return float(completion_loss(model(batch["rgb"], batch["sparse"], batch["known"]), batch)[0])


def test_training_writes_log_checkpoints_model_and_curve(run):
    root, _, res = run
    out = root / "run"
    rows = read_log(out / "log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    assert res["step"] == STEPS
    val = [float(r["val_mae"]) for r in rows if r["val_mae"]]
    assert len(val) == 2 and all(np.isfinite(v) and v > 0 for v in val)  # benchmark MAE at steps 3 and 6
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["step"] == STEPS
    ck = out / "checkpoints" / f"step-{STEPS:07d}"
    assert {p.name for p in ck.iterdir()} == {"model", "trainer.pt", "trainer.json"}
    assert (out / "model" / "model.safetensors").is_file() and (out / "curves.png").stat().st_size > 1000
    # lr follows OneCycle: flat at max (div_factor 1) early, annealed to ~lr/1e4 at the end
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[0] == pytest.approx(3e-3) and lrs[-1] < 1e-3


def test_loss_goes_down(run):
    _, cfg, _ = run
    before = _fixed_batch_loss(build_model(cfg).eval(), cfg)
    after = _fixed_batch_loss(DepthCompletionModel.from_pretrained(cfg.out_dir + "/model"), cfg)
    assert after < 0.8 * before, (before, after)


def test_resume_continues_from_the_same_step(run, tmp_path):
    """Crash after step 3's checkpoint: --resume replays steps 4..6, ending where the full run ended."""
    import dataclasses

    root, cfg, _ = run
    crashed = tmp_path / "crashed"
    shutil.copytree(root / "run", crashed)
    shutil.rmtree(crashed / f"checkpoints/step-{STEPS:07d}")
    shutil.rmtree(crashed / "model")
    (crashed / "checkpoints/latest.json").write_text(json.dumps({"step": 3, "dir": "step-0000003"}))
    rows = [r for r in read_log(crashed / "log.csv") if int(r["step"]) <= 3]
    (crashed / "log.csv").write_text(
        "step,epoch,loss,silog,known_mse,lr,grad_norm,val_mae,seconds\n"
        + "".join(",".join(r.values()) + "\n" for r in rows)
    )
    res = fit(dataclasses.replace(cfg, out_dir=str(crashed), val_rgbd=""), resume=True)
    assert res["step"] == STEPS
    assert [int(r["step"]) for r in read_log(crashed / "log.csv")] == list(range(1, STEPS + 1))
    a = DepthCompletionModel.from_pretrained(root / "run" / "model").state_dict()
    b = DepthCompletionModel.from_pretrained(crashed / "model").state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_trained_model_loads_through_generate_depth_path(run):
    from engine.backends.registry import build_depth_completer

    _, cfg, _ = run
    completer = build_depth_completer(cfg.out_dir + "/model")  # what `stitch generate --depth PATH` builds
    rng = np.random.default_rng(0)
    image = rng.random((40, 56, 3)).astype(np.float32)
    known = np.zeros((40, 56), bool)
    known[:, :20] = True
    depth = completer(image, np.where(known, 2.0, 0.0).astype(np.float32), known)
    assert depth.shape == (40, 56) and np.isfinite(depth).all() and (depth > 0).all()
    desc = completer.describe()
    assert desc["backend"] == "network" and desc["model_id"].endswith("model")  # recorded in the manifest


def test_resume_refuses_a_trainer_state_with_pickled_code(tmp_path):
    """A trainer.pt carrying pickled code is refused with one clear error; the code never runs."""
    from completion.training.checkpoints import load_checkpoint
    from splat.errors import StitchError

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    ckpt = tmp_path / "step-1"
    (ckpt / "model").mkdir(parents=True)
    model = torch.nn.Linear(2, 2)
    from safetensors.torch import save_file

    save_file(model.state_dict(), str(ckpt / "model" / "model.safetensors"))
    torch.save({"optimizer": Evil(), "step": 1}, ckpt / "trainer.pt")
    with pytest.raises(StitchError, match="cannot be resumed"):
        load_checkpoint(ckpt, model, None, None, None)
    assert not marker.exists()


def test_resume_on_a_finished_run_says_so_and_changes_nothing(run):
    import dataclasses

    root, cfg, _ = run
    before = (root / "run" / "log.csv").read_text()
    res = fit(dataclasses.replace(cfg, val_rgbd=""), resume=True)
    assert res["status"] == "already finished" and res["step"] == STEPS
    assert np.isfinite(res["final_loss"]) and "already finished at step 6" in res["message"]
    assert (root / "run" / "log.csv").read_text() == before


def test_reusing_an_out_dir_without_resume_is_refused(run):
    from splat.errors import StitchError

    root, cfg, _ = run
    with pytest.raises(StitchError, match=r"already holds a training run \(step 6\); pass --resume"):
        fit(cfg, resume=False)
    assert json.loads((root / "run" / "checkpoints" / "latest.json").read_text())["step"] == STEPS


def test_extending_a_finished_run_rebuilds_the_schedule(run, tmp_path):
    """--resume --max-steps 9 on a 6-step run: 3 more steps on a OneCycle rebuilt for 9, one row per step."""
    import dataclasses

    root, cfg, _ = run
    ext = tmp_path / "ext"
    shutil.copytree(root / "run", ext)
    res = fit(dataclasses.replace(cfg, out_dir=str(ext), val_rgbd="", max_steps=9), resume=True)
    assert res["status"] == "extended" and res["step"] == 9 and np.isfinite(res["final_loss"])
    rows = read_log(ext / "log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 10))
    lrs = [float(r["lr"]) for r in rows]
    # the 9-step schedule evaluated at steps 7..9: still annealing, ending near lr / 1e4
    assert lrs[6] > lrs[7] > lrs[8] and lrs[8] < 3e-3 / 100
    assert json.loads((ext / "checkpoints" / "latest.json").read_text())["step"] == 9


def test_logged_validation_is_the_number_bench_reports(run):
    """val_mae in log.csv comes from the generate/bench inference path (padding, flip, scaling 0.5)."""
    from completion.training.evaluate import rgbd_val_samples
    from engine.backends.registry import build_depth_completer
    from engine.bench.metrics import depth_metrics

    root, cfg, _ = run
    samples = rgbd_val_samples(cfg.val_rgbd, cfg.val_max_pairs, None, renderer="points", seed=cfg.seed)
    completer = build_depth_completer(str(root / "run" / "model"))  # what `stitch bench` builds
    maes = [
        depth_metrics(completer(s.image, s.known_depth, s.covered), s.gt, s.covered)["mae"] for s in samples
    ]
    logged = float(read_log(root / "run" / "log.csv")[-1]["val_mae"])
    assert logged == pytest.approx(float(np.mean(maes)), rel=1e-4)
