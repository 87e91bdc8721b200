"""Monocular depth + alignment: any transformers depth-estimation model, fitted to the known depth.

The paper's main baseline ("ZoeDepth + global scale & shift") and a strong practical backend: the model
predicts depth from the image alone, then one robust global scale & shift (depth_align.py) maps it onto
the depth the scene already has. The fit runs in the space the model's output is affine in: inverse depth
for relative models (MiDaS/DPT, Depth Anything relative), metres for metric ones (ZoeDepth, Depth Anything
metric, GLPN, Depth Pro). With no known depth (the first view) metric output is used as is; relative output
goes through a documented prior: its 2nd..98th percentile inverse-depth range maps linearly onto
[1/far, 1/near].
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.backends.depth_align import apply_alignment, estimate_alignment
from engine.backends.models import ResolvedModel
from engine.device import dtype_kwargs, resolve_device
from splat.errors import StitchError

# model_type -> what predicted_depth holds ("depth": metres; "inverse": relative inverse depth / disparity)
_METRIC_TYPES = {"zoedepth", "glpn", "depth_pro", "prompt_depth_anything"}
_INVERSE_TYPES = {"dpt"}


def output_kind(config) -> str:
    """'depth' or 'inverse' for a transformers depth model config (override: MonoDepthConfig.output)."""
    model_type = getattr(config, "model_type", "")
    if model_type == "depth_anything":
        return "depth" if getattr(config, "depth_estimation_type", "relative") == "metric" else "inverse"
    if model_type in _METRIC_TYPES:
        return "depth"
    if model_type in _INVERSE_TYPES:
        return "inverse"
    return "depth"


@dataclass(frozen=True)
class MonoDepthConfig:
    output: str = "auto"  # auto | depth | inverse: what the model predicts
    space: str = "auto"  # auto | depth | inverse: where scale & shift are fitted (auto: the output's space)
    robust: bool = True  # Tukey IRLS (outliers at depth edges barely move the fit)
    flip_average: bool = False  # average with the horizontally flipped prediction (2x cost)
    keep_known: bool = False  # copy the known depth back exactly (seams show where the fit is imperfect)
    prior_near: float = 1.0  # first view, relative models: metres at the 98th inverse-depth percentile
    prior_far: float = 10.0  # ... and at the 2nd percentile

    def __post_init__(self) -> None:
        for name in ("output", "space"):
            if getattr(self, name) not in ("auto", "depth", "inverse"):
                raise StitchError(f"mono {name} must be auto, depth or inverse, got {getattr(self, name)!r}")
        if not 0 < self.prior_near < self.prior_far:
            raise StitchError(f"need 0 < prior_near < prior_far, got {self.prior_near}, {self.prior_far}")


def load_image_processor(model_id: str, revision: str | None = None):
    """transformers' image processor on its PIL backend: transformers 5 otherwise picks the torchvision one
    (ZoeDepth, DPT, ...), and torchvision is not a dependency (PyPI's wheels do not match our pinned CPU
    torch)."""
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(model_id, revision=revision, backend="pil")
    except TypeError:  # transformers 4.x: no backend argument; its slow processors are PIL/numpy already
        return AutoImageProcessor.from_pretrained(model_id, revision=revision, use_fast=False)


class MonoDepthCompleter:
    """`DepthCompleter`: a transformers depth model aligned to the known depth (build: `from_pretrained`)."""

    name = "mono"

    def __init__(
        self, model, processor, config: MonoDepthConfig | None = None, info: ResolvedModel | None = None
    ):
        self.model = model.eval()
        self.processor = processor
        self.config = config or MonoDepthConfig()
        self.info = info
        self.output = output_kind(model.config) if self.config.output == "auto" else self.config.output
        self.space = self.output if self.config.space == "auto" else self.config.space
        post = getattr(processor, "post_process_depth_estimation", None)
        self._post = post
        self._post_params = set(inspect.signature(post).parameters) if post is not None else set()

    @classmethod
    def from_pretrained(
        cls,
        model: ResolvedModel | str | Path,
        *,
        config: MonoDepthConfig | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> MonoDepthCompleter:
        """Load a transformers depth model + image processor from a local folder (models.resolve)."""
        from transformers import AutoModelForDepthEstimation

        info = model if isinstance(model, ResolvedModel) else ResolvedModel(str(model), Path(model), "local")
        device = torch.device(device) if device is not None else resolve_device("auto")
        dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        try:
            net = AutoModelForDepthEstimation.from_pretrained(
                str(info.path), **dtype_kwargs("transformers", dtype)
            )
            processor = load_image_processor(str(info.path))
        except (OSError, ValueError, KeyError) as exc:
            raise StitchError(
                f"{info.path} is not a transformers depth-estimation model ({exc.__class__.__name__}: "
                f"{str(exc).splitlines()[0][:120]}); give a folder with config.json, preprocessor_config.json"
            ) from exc
        return cls(net.to(device), processor, config, info)

    def describe(self) -> dict:
        return {
            "backend": "mono",
            "model": self.info.to_manifest() if self.info else None,
            "model_id": (self.info.repo_id or str(self.info.path)) if self.info else None,
            "revision": (self.info.commit or self.info.revision) if self.info else None,
            "model_type": getattr(self.model.config, "model_type", None),
            "output_kind": self.output,
            "align_space": self.space,
            "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
            "device": str(next(self.model.parameters()).device),
            **asdict(self.config),
        }

    @torch.no_grad()
    def _predict_once(self, image_u8: np.ndarray) -> np.ndarray:
        h, w = image_u8.shape[:2]
        param = next(self.model.parameters())
        # ZoeDepth: no reflect padding, so a plain resize undoes the processor (its post-processing calls
        # torchvision even on the PIL backend in transformers 5).
        zoe = getattr(self.model.config, "model_type", "") == "zoedepth"
        inputs = self.processor(images=image_u8, return_tensors="pt", **({"do_pad": False} if zoe else {}))
        pixel_values = inputs["pixel_values"].to(device=param.device, dtype=param.dtype)
        outputs = self.model(pixel_values=pixel_values)
        if self._post is not None and not zoe:
            kw = {"target_sizes": [(h, w)]}
            if "source_sizes" in self._post_params:  # ZoeDepth: removes its reflect padding first
                kw["source_sizes"] = [(h, w)]
            outputs.predicted_depth = outputs.predicted_depth.float()
            pred = self._post(outputs, **kw)[0]["predicted_depth"]
        else:
            pred = F.interpolate(
                outputs.predicted_depth.float()[:, None], size=(h, w), mode="bicubic", align_corners=False
            )[0, 0]
        return pred.float().cpu().numpy()

    def predict(self, image: np.ndarray) -> np.ndarray:
        """image [H, W, 3] float in [0, 1] -> the model's raw output [H, W] (depth or inverse depth)."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise StitchError(f"depth model input must be [H, W, 3], got {image.shape}")
        u8 = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        pred = self._predict_once(u8)
        if self.config.flip_average:
            pred = 0.5 * (pred + self._predict_once(np.ascontiguousarray(u8[:, ::-1]))[:, ::-1])
        pred = np.nan_to_num(pred.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        # Upsampling (bicubic) overshoots below zero at sharp edges: depth floors at 1 mm; inverse depth at a
        # tiny positive value, i.e. "very far" (the alignment then clamps it to its far limit).
        floor = 1e-3 if self.output == "depth" else 1e-6 * max(float(np.abs(pred).max()), 1e-6)
        return np.maximum(pred, floor)

    def _prior_depth(self, pred: np.ndarray) -> np.ndarray:
        """No known depth: metric output as is; relative inverse depth mapped onto [prior_near, prior_far]."""
        if self.output == "depth":
            return np.clip(pred, 1e-3, None).astype(np.float32)
        lo, hi = np.percentile(pred, [2.0, 98.0])
        inv_far, inv_near = 1.0 / self.config.prior_far, 1.0 / self.config.prior_near
        if hi - lo <= 1e-12 * max(abs(hi), 1.0):
            return np.full(pred.shape, np.sqrt(self.config.prior_near * self.config.prior_far), np.float32)
        inv = inv_far + (pred - lo) / (hi - lo) * (inv_near - inv_far)
        return (1.0 / np.clip(inv, inv_far, inv_near)).astype(np.float32)

    def __call__(self, image: np.ndarray, known_depth: np.ndarray, known_mask: np.ndarray) -> np.ndarray:
        """image [H, W, 3] in [0, 1], known_depth [H, W] m, known_mask [H, W] bool -> depth [H, W] m."""
        if known_depth.shape != image.shape[:2] or known_mask.shape != image.shape[:2]:
            raise StitchError(
                f"known_depth {known_depth.shape} and known_mask {known_mask.shape} must match the image "
                f"{image.shape[:2]}"
            )
        pred = self.predict(image)
        mask = known_mask.astype(bool) & np.isfinite(known_depth) & (known_depth > 0)
        if not mask.any():
            return self._prior_depth(pred)
        inverse = self.output == "inverse"
        alignment = estimate_alignment(
            pred, known_depth, mask, space=self.space, robust=self.config.robust, pred_is_inverse=inverse
        )
        self.last_alignment = alignment  # inspected by tests and debugging tools
        depth = apply_alignment(pred, alignment, pred_is_inverse=inverse)
        if self.config.keep_known:
            depth = np.where(mask, known_depth.astype(np.float32), depth)
        return depth.astype(np.float32)
