"""Teacher depth for distillation: predict depth for a folder of images and store it with metadata.

`stitch train teacher IMAGES_DIR OUT_DIR --teacher SPEC`. SPEC is
- a transformers depth-estimation model (hub id or local folder: ZoeDepth, Depth Anything, DPT, GLPN, ...), or
- `marigold:ID` for diffusers' MarigoldDepthPipeline (the paper's teacher),
  e.g. `marigold:prs-eth/marigold-depth-v1-1`.

- `gt`: the source's own ground truth (NYU Depth v2 labelled .mat or BTS sync PNGs), border cropped.

Inputs are any `training.sources` layout (a folder tree, NYU .mat + splits.mat, BTS sync + split file,
Places365); outputs per item id: `ID.npy|png` + `ID.json` (depth_io), with `K` when the dataset knows it.

Relative teachers (Marigold's affine-invariant depth, DPT / Depth Anything disparity) and metric depth:
- `align="auto"` (default): where the item has ground truth (NYU), the teacher is fitted to it by least
  squares (scale + shift; in inverse depth for disparity teachers, in depth otherwise) and stored as metric
  depth: this is how Marigold itself is evaluated on NYU, and it gives the warped masks (which depend on the
  scene's true relief, not just its ordering) metric geometry.
- without ground truth (Places365), or `align="range"`: normalised to depth in [1, relative_range] (kind
  "relative"). The training data rescales relative maps to a median of `relative_median` metres, but the
  warped-mask geometry (parallax between near and far) is decided by this squeeze: range 10 means the far
  plane is 10x the near one, roughly an indoor room seen from 0.5-5 m. Documented, not learned.
Idempotent and resumable: items whose JSON exists are skipped, unless a *different* teacher (spec or
options) wrote them, which is refused (pass overwrite to redo); shard k of n takes every n-th item.
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

from completion.training.depth_io import is_done, read_json, write_depth
from completion.training.sources import Item, SourceSpec, list_items
from engine.backends.depth_mono import load_image_processor  # PIL backend: torchvision is not a dependency
from engine.device import dtype_kwargs, resolve_device
from splat.errors import ModelUnavailableError, StitchError


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
        return resolve_device("auto")
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
        from transformers import AutoModelForDepthEstimation

        self.model_id = model_id
        self.device = _device(device)
        try:
            self.processor = load_image_processor(model_id, revision=revision)
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
        zoe = self.model.config.model_type == "zoedepth"
        # ZoeDepth: no padding, so the plain resize below undoes the processor (its post-processing calls
        # torchvision even on the PIL backend in transformers 5)
        kw = {"do_pad": False} if zoe else {}
        inputs = self.processor(images=(small * 255).round().astype(np.uint8), return_tensors="pt", **kw)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        outputs = self.model(**inputs)
        post = getattr(self.processor, "post_process_depth_estimation", None)
        if post is not None and not zoe:
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
            self.pipe = MarigoldDepthPipeline.from_pretrained(
                model_id, revision=revision, **dtype_kwargs("diffusers", dtype)
            )
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


class GroundTruthTeacher:
    """The dataset's own metric depth (NYU); run_teacher feeds it the item, not just the image."""

    kind = "metric"

    def describe(self) -> dict:
        return {
            "teacher": "gt",
            "teacher_class": "ground truth",
            "teacher_output": "metric",
            "kind": "metric",
        }

    def __call__(self, image: np.ndarray) -> np.ndarray:
        raise StitchError("the gt teacher needs the dataset item (run_teacher passes it)")


def load_teacher(spec: str, device: str | None = None, **kw) -> Teacher:
    """'gt' -> GroundTruthTeacher, 'marigold:ID' -> MarigoldTeacher, anything else -> TransformersTeacher."""
    if spec == "gt":
        return GroundTruthTeacher()
    if spec.startswith("marigold:"):
        return MarigoldTeacher(spec.split(":", 1)[1], device=device, **kw)
    kw.pop("steps", None)
    kw.pop("ensemble", None)
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
    source: SourceSpec | None = None  # None: a folder tree at images_dir
    steps: int | None = None  # Marigold denoising steps (None: the pipeline's default)
    ensemble: int = 1  # Marigold ensemble size
    align: str = "auto"  # auto (fit relative teachers to ground truth where there is some) | range

    def __call__(self) -> dict:
        return run_teacher(self)

    def checkpoint(self, *args, **kwargs):
        """submitit: on timeout / preemption requeue the same shard; finished items are skipped."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)

    def signature(self) -> dict:
        """What decides the output: another signature on an existing file means another teacher wrote it."""
        opts: dict = {"relative_range": self.relative_range, "align": self.align}
        if self.teacher.startswith("marigold:"):
            opts |= {"steps": self.steps, "ensemble": self.ensemble}
        return {"spec": self.teacher, "options": opts}


def shard_items(items: list, shard: int, num_shards: int) -> list:
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise StitchError(f"shard must be in 0..num_shards-1 (got {shard} of {num_shards})")
    return items[shard::num_shards]


def fit_to_ground_truth(rel: np.ndarray, gt: np.ndarray, disparity: bool) -> tuple[np.ndarray, dict] | None:
    """Least-squares scale + shift of a relative map onto metric ground truth (in inverse depth when the
    teacher predicts disparity) -> (metric depth [H, W], fit info), or None when the fit is degenerate."""
    valid = (gt > 0) & (rel > 0) & np.isfinite(gt)
    if valid.sum() < 16:
        return None
    x = (1.0 / rel if disparity else rel)[valid].astype(np.float64)
    y = (1.0 / gt if disparity else gt)[valid].astype(np.float64)
    A = np.stack([x, np.ones_like(x)], 1)
    (scale, shift), *_ = np.linalg.lstsq(A, y, rcond=None)
    if not np.isfinite(scale) or scale <= 0:
        return None
    z = scale * (1.0 / rel if disparity else rel) + shift
    if disparity:
        z = np.where(z > 1e-6, 1.0 / np.maximum(z, 1e-6), 0.0)
    z = np.where(z > 0, z, 0.0).astype(np.float32)
    ok = valid & (z > 0)
    absrel = float(np.mean(np.abs(z[ok] - gt[ok]) / gt[ok])) if ok.any() else float("nan")
    return z, {
        "aligned": "gt-lstsq-disparity" if disparity else "gt-lstsq",
        "scale": float(scale),
        "shift": float(shift),
        "absrel_vs_gt": absrel,
    }


def _job_items(job: TeacherJob) -> list[Item]:
    return list_items(job.source or SourceSpec(job.images_dir))


def _check_same_teacher(out: Path, done: list[Item], job: TeacherJob) -> None:
    sig = job.signature()
    other: dict[str, int] = {}
    for it in done:
        meta = read_json(out / f"{it.id}.json")
        theirs = {"spec": meta.get("spec"), "options": meta.get("options")}
        if theirs["spec"] is None:  # written before signatures were recorded: compare the model id
            theirs = {"spec": meta.get("teacher"), "options": None}
            same = meta.get("teacher") in (job.teacher, job.teacher.split(":", 1)[-1])
        else:
            same = theirs == sig
        if not same:
            key = f"{theirs['spec']} {theirs['options'] or ''}".strip()
            other[key] = other.get(key, 0) + 1
    if other:
        key, n = next(iter(other.items()))
        raise StitchError(
            f"{n} finished file(s) in {out} were written by another teacher ({key}), not {job.teacher} "
            f"{sig['options']}; pass --overwrite to redo them or choose another output folder"
        )


def run_teacher(job: TeacherJob, teacher: Teacher | None = None) -> dict:
    """Predict and store depth for this shard's items that are not done yet; returns counts."""
    if job.align not in ("auto", "range"):
        raise StitchError(f"align must be auto or range, got {job.align!r}")
    items = shard_items(_job_items(job), job.shard, job.num_shards)
    out = Path(job.out_dir)
    done = [] if job.overwrite else [it for it in items if is_done(out, it.id)]
    if done:
        _check_same_teacher(out, done, job)
    done_ids = {it.id for it in done}
    todo = [it for it in items if it.id not in done_ids]
    stats = {"shard": job.shard, "total": len(items), "skipped": len(done), "written": 0}
    if not todo:
        return stats
    if teacher is None:
        kw = {"relative_range": job.relative_range}
        if job.teacher.startswith("marigold:"):
            kw |= {"steps": job.steps, "ensemble": job.ensemble}
        teacher = load_teacher(job.teacher, device=job.device, **kw) if job.teacher != "gt" else None
        teacher = teacher or GroundTruthTeacher()
    desc = teacher.describe()
    for item in todo:
        t0 = time.perf_counter()
        image = item.load_rgb()
        meta = {**desc, **job.signature(), "source": item.path or f"{item.source.root}#{item.index + 1}"}
        if isinstance(teacher, GroundTruthTeacher):
            depth = item.load_gt_depth()
            if depth is None:
                raise StitchError(f"--teacher gt: {item.source.root} has no ground-truth depth ({item.id})")
        else:
            depth = teacher(image)
            if teacher.kind == "relative" and job.align == "auto":
                gt = item.load_gt_depth()
                fit = (
                    None
                    if gt is None
                    else fit_to_ground_truth(depth, gt, disparity=desc.get("teacher_output") == "disparity")
                )
                if fit is not None:
                    depth, info = fit
                    meta |= {**info, "kind": "metric"}
        if depth.shape != image.shape[:2]:
            raise StitchError(f"teacher returned depth {depth.shape} for image {image.shape[:2]} ({item.id})")
        K = item.intrinsics()
        if K is not None:
            meta["K"] = K
        meta["seconds"] = round(time.perf_counter() - t0, 4)
        write_depth(out, item.id, depth, meta, fmt=job.fmt)
        stats["written"] += 1
    return stats
