"""Overfitting check: can the training pipeline fit one real RGB-D frame?

A tiny completion model is trained with the real pipeline (teacher-depth files, warped masks, dataset, losses,
training loop) on ONE frame whose ground-truth depth plays the teacher, with pure masked-completion samples at
the true scale. It then completes a held-out warped mask of that frame (a camera draw not used in training);
we compare the MAE on the masked pixels (with ground truth) against the classical completer
(ClassicalDepthCompleter, the offline default) and nearest-known fill. A pipeline that
cannot even memorise one frame has a bug; one that can should beat geometry-only filling by a wide margin.

`python -m completion.training.overfit [RGBD_DIR] [--steps N]` prints the numbers as JSON.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np


def overfit_frame(
    rgbd_dir: str | Path,
    work_dir: str | Path,
    frame: int = 0,
    size: tuple[int, int] = (48, 64),
    steps: int = 200,
    n_masks: int = 8,
    lr: float = 3e-3,
    batch_size: int = 2,
    model_kwargs: dict | None = None,
    seed: int = 0,
) -> dict:
    from completion.network.model import DepthCompletionModel
    from completion.training.config import config_from_dict
    from completion.training.depth_io import read_rgb, write_depth, write_mask
    from completion.training.evaluate import predict_depth
    from completion.training.masks import WarpConfig, item_rng, warped_hole_mask
    from completion.training.train import fit
    from engine.backends.depth_classical import ClassicalDepthCompleter, NearestFillCompleter
    from engine.bench.rgbd import load_rgbd_sequence

    work = Path(work_dir)
    fr = load_rgbd_sequence(rgbd_dir).load(frame)
    h, w = size
    gt = cv2.resize(fr.depth, (w, h), interpolation=cv2.INTER_NEAREST)
    (work / "images").mkdir(parents=True, exist_ok=True)
    rgb8 = (cv2.resize(fr.image, (w, h), interpolation=cv2.INTER_AREA) * 255).round().astype(np.uint8)
    cv2.imwrite(str(work / "images" / "frame.png"), cv2.cvtColor(rgb8, cv2.COLOR_RGB2BGR))
    image = read_rgb(work / "images" / "frame.png")  # exactly what training sees
    write_depth(work / "depth", "frame", gt, {"kind": "metric", "teacher": "ground truth"})
    warp = WarpConfig(renderer="splat", min_hole=0.05)
    for k in range(n_masks):
        hole, meta = warped_hole_mask(gt, item_rng(seed + k, "frame"), warp)
        write_mask(work / "masks", f"train{k}", hole, meta)
    test_hole, _ = warped_hole_mask(gt, item_rng(seed + 10_000, "frame"), warp)  # held-out camera draw

    cfg = config_from_dict(
        {
            "data": {
                "images": str(work / "images"),
                "depths": str(work / "depth"),
                "masks": str(work / "masks"),
                "size": [h, w],
                "mono_prob": 0.0,
                "rescale": False,
                "crop_scale": [1.0, 1.0],
                "hflip": False,
                "color_jitter": 0.0,
            },
            "out_dir": str(work / "run"),
            "model_kwargs": dict(model_kwargs or {"hidden": 64}),
            "batch_size": batch_size,
            "max_steps": steps,
            "lr": lr,
            "pct_start": 0.3,
            "ckpt_every": 10**9,
            "seed": seed,
        }
    )
    t0 = time.process_time()
    res = fit(cfg)
    cpu = time.process_time() - t0
    model = DepthCompletionModel.from_pretrained(work / "run" / "model")
    known = (~test_hole) & (gt > 0)
    evaluate = test_hole & (gt > 0)
    known_depth = np.where(known, gt, 0.0).astype(np.float32)
    preds = {
        "network": predict_depth(model, image, known_depth, known),
        "classical": ClassicalDepthCompleter()(image, known_depth, known),
        "nearest": NearestFillCompleter()(image, known_depth, known),
    }
    out = {f"{k}_mae": float(np.abs(p - gt)[evaluate].mean()) for k, p in preds.items()}
    out.update(
        {
            "frame": fr.name,
            "size": [h, w],
            "steps": steps,
            "first_loss": res["first_loss"],
            "final_loss": res["final_loss"],
            "eval_pixels": int(evaluate.sum()),
            "test_hole_fraction": float(test_hole.mean()),
            "train_cpu_seconds": round(cpu, 1),
        }
    )
    return out


def main() -> None:
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rgbd_dir", nargs="?", default="../shared/data/rgbd/redkitchen_dev")
    ap.add_argument("--frame", type=int, default=0)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--height", type=int, default=48)
    ap.add_argument("--width", type=int, default=64)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        res = overfit_frame(args.rgbd_dir, tmp, args.frame, (args.height, args.width), args.steps)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
