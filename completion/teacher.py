"""Teacher depth for distillation: predict depth for a folder of images and store it with metadata.

`stitch train teacher IMAGES_DIR OUT_DIR --teacher SPEC`. SPEC is
- a transformers depth-estimation model (hub id or local folder: ZoeDepth, Depth Anything, DPT, GLPN, ...), or
- `marigold:ID` for diffusers' MarigoldDepthPipeline (the paper's teacher),
  e.g. `marigold:prs-eth/marigold-depth-v1-1`.

Outputs per image: `STEM.npy|png` + `STEM.json` (depth_io). Metric teachers are stored in metres
(kind "metric"). Relative teachers (affine-invariant depth, or disparity from DPT / Depth Anything) are
normalised to depth in [1, relative_range] (kind "relative"); the training data rescales them anyway.
Idempotent and resumable: items whose JSON exists are skipped; shardable: shard k of n takes every n-th image.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from completion.depth_io import is_done, list_images, read_rgb, write_depth
from engine.errors import ModelUnavailableError, StitchError


class Teacher(Protocol):
    kind: str  # "metric" or "relative" (what __call__ returns)

    def describe(self) -> dict: ...

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """image [H, W, 3] float32 in [0, 1] -> depth [H, W] float32 (> 0; metres when kind == 'metric')."""
        ...


def disparity_to_relative_depth(disp: np.ndarray, depth_range: float) -> np.ndarray:
    """Affine-invariant disparity -> depth in [1, depth_range] (near = 1): normalise, then invert."""
    lo, hi = np.percentile(disp, [0.5, 99.5]) if disp.size else (0.0, 1.0)
    d = np.clip((disp - lo) / max(hi - lo, 1e-8), 0.0, 1.0)
    return (1.0 / (d * (1.0 - 1.0 / depth_range) + 1.0 / depth_range)).astype(np.float32)


def affine_depth_to_relative_depth(depth: np.ndarray, depth_range: float) -> np.ndarray:
    """Affine-invariant depth (e.g. Marigold's [0, 1]) -> depth in [1, depth_range]."""
    lo, hi = np.percentile(depth, [0.5, 99.5]) if depth.size else (0.0, 1.0)
    d = np.clip((depth - lo) / max(hi - lo, 1e-8), 0.0, 1.0)
    return (1.0 + d * (depth_range - 1.0)).astype(np.float32)


def _device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class TransformersTeacher:
    """Any transformers AutoModelForDepthEstimation; output kind read from the model type."""

    METRIC_TYPES = ("zoedepth", "glpn")

    def __init__(
        self,
        model_id: str,
        device: str | None = None,
        kind: str | None = None,
        relative_range: float = 10.0,
        max_side: int = 1024,
        revision: str | None = None,
    ) -> None:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        self.model_id = model_id
        self.device = _device(device)
        try:
            self.processor = AutoImageProcessor.from_pretrained(model_id, revision=revision)
            self.model = AutoModelForDepthEstimation.from_pretrained(model_id, revision=revision)
        except OSError as exc:
            raise ModelUnavailableError(
                f"teacher {model_id!r} is not available ({exc.__class__.__name__}); download it on a"
                " connected machine (`stitch models download ID`) or pass a local folder"
            ) from exc
        self.model.to(self.device).eval()
        cfg = self.model.config
        if kind is None:
            metric = (
                cfg.model_type in self.METRIC_TYPES or getattr(cfg, "depth_estimation_type", "") == "metric"
            )
            kind = "metric" if metric else "disparity"
        if kind not in ("metric", "disparity", "relative"):
            raise StitchError(f"teacher kind must be metric, disparity or relative, got {kind!r}")
        self.output_kind = kind
        self.kind = "metric" if kind == "metric" else "relative"
        self.relative_range = float(relative_range)
        self.max_side = int(max_side)

    def describe(self) -> dict:
        return {
            "teacher": self.model_id,
            "teacher_class": type(self.model).__name__,
            "teacher_output": self.output_kind,
            "kind": self.kind,
            "relative_range": self.relative_range if self.kind == "relative" else None,
        }

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        s = min(1.0, self.max_side / max(h, w))
        small = image if s == 1.0 else _resize(image, round(h * s), round(w * s))
        inputs = self.processor(images=(small * 255).round().astype(np.uint8), return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        outputs = self.model(**inputs)
        post = getattr(self.processor, "post_process_depth_estimation", None)
        if post is not None:
            params = inspect.signature(post).parameters
            kw = {"target_sizes": [(h, w)]}
            if "source_sizes" in params:
                kw["source_sizes"] = [small.shape[:2]]
            pred = post(outputs, **kw)[0]["predicted_depth"]
        else:
            pred = outputs.predicted_depth
        pred = pred.float().reshape(1, 1, *pred.shape[-2:])
        if pred.shape[-2:] != (h, w):
            pred = F.interpolate(pred, size=(h, w), mode="bilinear", align_corners=False)
        out = pred[0, 0].cpu().numpy().astype(np.float32)
        if self.output_kind == "metric":
            return np.maximum(out, 0.0)
        if self.output_kind == "disparity":
            return disparity_to_relative_depth(out, self.relative_range)
        return affine_depth_to_relative_depth(out, self.relative_range)


class MarigoldTeacher:
    """diffusers' MarigoldDepthPipeline (affine-invariant depth in [0, 1]) -> relative depth."""

    kind = "relative"

    def __init__(
        self,
        model_id: str,
        device: str | None = None,
        relative_range: float = 10.0,
        steps: int | None = None,
        ensemble: int = 1,
        seed: int = 0,
        revision: str | None = None,
    ) -> None:
        from diffusers import MarigoldDepthPipeline

        self.model_id = model_id
        self.device = _device(device)
        dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        try:
            self.pipe = MarigoldDepthPipeline.from_pretrained(model_id, dtype=dtype, revision=revision)
        except OSError as exc:
            raise ModelUnavailableError(
                f"Marigold teacher {model_id!r} is not available ({exc.__class__.__name__}); download it on"
                " a connected machine or pass a local folder"
            ) from exc
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self.relative_range = float(relative_range)
        self.steps, self.ensemble, self.seed = steps, int(ensemble), int(seed)

    def describe(self) -> dict:
        return {
            "teacher": self.model_id,
            "teacher_class": "MarigoldDepthPipeline",
            "teacher_output": "affine-invariant depth",
            "kind": self.kind,
            "relative_range": self.relative_range,
            "steps": self.steps,
            "ensemble": self.ensemble,
        }

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> np.ndarray:
        from PIL import Image

        gen = torch.Generator(device=self.device).manual_seed(self.seed)
        kw = {"ensemble_size": self.ensemble, "generator": gen, "output_type": "np"}
        if self.steps is not None:
            kw["num_inference_steps"] = self.steps
        out = self.pipe(Image.fromarray((image * 255).round().astype(np.uint8)), **kw)
        pred = np.asarray(out.prediction, dtype=np.float32).reshape(
            -1, *np.asarray(out.prediction).shape[-3:]
        )
        depth = pred[0, ..., 0] if pred.shape[-1] == 1 else pred[0, 0]
        if depth.shape != image.shape[:2]:
            depth = _resize(depth, *image.shape[:2])
        return affine_depth_to_relative_depth(depth, self.relative_range)


def _resize(a: np.ndarray, h: int, w: int) -> np.ndarray:
    import cv2

    return cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA if a.shape[0] > h else cv2.INTER_LINEAR)


def load_teacher(spec: str, device: str | None = None, **kw) -> Teacher:
    """'marigold:ID' -> MarigoldTeacher, anything else -> TransformersTeacher."""
    if spec.startswith("marigold:"):
        return MarigoldTeacher(spec.split(":", 1)[1], device=device, **kw)
    return TransformersTeacher(spec, device=device, **kw)


@dataclass(frozen=True)
class TeacherJob:
    """One shard of a teacher run (picklable: submitit sends it to the worker, which loads the model)."""

    images_dir: str
    out_dir: str
    teacher: str
    fmt: str = "npy"
    shard: int = 0
    num_shards: int = 1
    device: str | None = None
    overwrite: bool = False
    relative_range: float = 10.0

    def __call__(self) -> dict:
        return run_teacher(self)


def shard_items(items: list, shard: int, num_shards: int) -> list:
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise StitchError(f"shard must be in 0..num_shards-1 (got {shard} of {num_shards})")
    return items[shard::num_shards]


def run_teacher(job: TeacherJob, teacher: Teacher | None = None) -> dict:
    """Predict and store depth for this shard's images that are not done yet; returns counts."""
    images = shard_items(list_images(job.images_dir), job.shard, job.num_shards)
    out = Path(job.out_dir)
    todo = [p for p in images if job.overwrite or not is_done(out, p.stem)]
    stats = {"shard": job.shard, "total": len(images), "skipped": len(images) - len(todo), "written": 0}
    if not todo:
        return stats
    if teacher is None:
        teacher = load_teacher(job.teacher, device=job.device, relative_range=job.relative_range)
    desc = teacher.describe()
    for path in todo:
        t0 = time.perf_counter()
        image = read_rgb(path)
        depth = teacher(image)
        if depth.shape != image.shape[:2]:
            raise StitchError(
                f"teacher returned depth {depth.shape} for image {image.shape[:2]} ({path.name})"
            )
        meta = {**desc, "source": path.name, "seconds": round(time.perf_counter() - t0, 4)}
        write_depth(out, path.stem, depth, meta, fmt=job.fmt)
        stats["written"] += 1
    return stats
