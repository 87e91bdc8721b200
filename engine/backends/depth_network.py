"""The learned depth completion network (completion/network/model.py): a `DepthCompleter`, run as the release.

Per call: the 5-channel input (normalised RGB, sparse depth / (scaling * 10), mask) is built by the model,
padded (RGB reflected, depth and mask zero-padded; pad = int(sqrt(side / 2) * 3) px per side, as the release),
run at the network's size, cropped, averaged with the prediction of the horizontally flipped input, and
multiplied by the depth scaling: 1.0 for the first view (no known depth), 0.5 for generated views (the
release's `depth_scaling`). As the release, the output is not capped (only floored at min_depth), and NaN/Inf
(fp16 overflow) is an error, not a silent 1 mm.
Any input size works; the output has the input's size.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.backends.models import ResolvedModel
from engine.device import resolve_device
from splat.errors import StitchError


@dataclass(frozen=True)
class NetworkDepthConfig:
    pad: bool = True  # reflect-pad the input (the release: reduces border artefacts)
    pad_factor: float = 3.0  # pad = int(sqrt(side / 2) * pad_factor) pixels on each side
    flip_average: bool = True  # average with the flipped input's prediction
    depth_scaling: float = 0.5  # views with known depth (the release's generated views)
    first_view_scaling: float = 1.0  # the first view (all-zero sparse depth: monocular mode)
    keep_known: bool = False  # copy the known depth back exactly

    def __post_init__(self) -> None:
        if self.depth_scaling <= 0 or self.first_view_scaling <= 0:
            raise StitchError("depth scalings must be positive")
        if self.pad_factor < 0:
            raise StitchError(f"pad_factor must be >= 0, got {self.pad_factor}")


def _pad_amounts(h: int, w: int, factor: float) -> tuple[int, int]:
    # Reflect padding needs pad < side.
    ph = min(int(np.sqrt(h / 2) * factor), h - 1)
    pw = min(int(np.sqrt(w / 2) * factor), w - 1)
    return max(ph, 0), max(pw, 0)


class NetworkDepthCompleter:
    """`DepthCompleter` on a DepthCompletionModel. Build with `from_pretrained` / `from_invisible_stitch`."""

    name = "network"

    def __init__(
        self,
        model,
        config: NetworkDepthConfig | None = None,
        info: ResolvedModel | None = None,
        source: str = "stitch",
    ) -> None:
        self.model = model.eval()
        self.config = config or NetworkDepthConfig()
        self.info = info
        self.source = (
            source  # "stitch" (save_pretrained folder) | "invisible-stitch" (the paper's checkpoint)
        )
        if source == "invisible-stitch":
            self.name = "invisible-stitch"

    @classmethod
    def from_pretrained(
        cls,
        model: ResolvedModel | str | Path,
        *,
        config: NetworkDepthConfig | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> NetworkDepthCompleter:
        """A folder written by DepthCompletionModel.save_pretrained (local path or ResolvedModel)."""
        from completion.network.model import DepthCompletionModel

        info = model if isinstance(model, ResolvedModel) else ResolvedModel(str(model), Path(model), "local")
        net = DepthCompletionModel.from_pretrained(info.path)
        return cls(_place(net, device, dtype), config, info, source="stitch")

    @classmethod
    def from_invisible_stitch(
        cls,
        checkpoint: ResolvedModel | str | Path,
        *,
        config: NetworkDepthConfig | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        model_config=None,
    ) -> NetworkDepthCompleter:
        """The paper's released checkpoint (invisible-stitch.pt, original ZoeDepth naming), a local file.

        The architecture is ZoeD-N (BEiT-L-384) unless `model_config` or a stitch `config.json` beside it
        says otherwise (original-naming checkpoints of other sizes: fine-tunes, test models)."""
        from completion.network.config import MODEL_TYPE, CompletionConfig
        from completion.network.model import DepthCompletionModel

        info = (
            checkpoint
            if isinstance(checkpoint, ResolvedModel)
            else ResolvedModel(str(checkpoint), Path(checkpoint), "local")
        )
        path = Path(info.path)
        folder, filename = (path.parent, path.name) if path.is_file() else (path, "invisible-stitch.pt")
        sidecar = folder / "config.json"
        if model_config is None and sidecar.is_file():
            d = json.loads(sidecar.read_text(encoding="utf-8"))
            if d.get("model_type") == MODEL_TYPE:
                model_config = CompletionConfig.from_json_dict(d)
        net = DepthCompletionModel.from_invisible_stitch(str(folder), filename=filename, config=model_config)
        return cls(_place(net, device, dtype), config, info, source="invisible-stitch")

    def describe(self) -> dict:
        p = next(self.model.parameters())
        return {
            "backend": self.name,
            "model": self.info.to_manifest() if self.info else None,
            "model_id": (self.info.repo_id or str(self.info.path)) if self.info else None,
            "revision": (self.info.commit or self.info.revision) if self.info else None,
            "checkpoint_format": self.source,
            "net_size": list(self.model.config.net_size) if self.model.config.net_size else None,
            "dtype": str(p.dtype).replace("torch.", ""),
            "device": str(p.device),
            **asdict(self.config),
        }

    def _run_padded(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 5, H, W] (prepared input) -> [B, 1, H, W] depth at scaling 1, padded and cropped."""
        h, w = x.shape[-2:]
        ph, pw = _pad_amounts(h, w, self.config.pad_factor) if self.config.pad else (0, 0)
        if ph or pw:
            pad = [pw, pw, ph, ph]
            x = torch.cat([F.pad(x[:, :3], pad, mode="reflect"), F.pad(x[:, 3:], pad, value=0.0)], dim=1)
        out = self.model.forward_normalized(x, (h + 2 * ph, w + 2 * pw))
        return out[:, :, ph : ph + h, pw : pw + w]

    @torch.no_grad()
    def predict(
        self,
        rgb: torch.Tensor,  # [B, 3, H, W] in [0, 1]
        sparse_depth: torch.Tensor,  # [B, 1, H, W] metres, 0 = unknown
        mask: torch.Tensor,  # [B, 1, H, W] bool
        depth_scaling: float,
    ) -> torch.Tensor:  # [B, 1, H, W] metres
        """Batched inference with padding, flip averaging and depth scaling."""
        x = self.model.prepare_inputs(rgb, sparse_depth, mask, depth_scaling)
        out = self._run_padded(x)
        if self.config.flip_average:
            out = 0.5 * (out + torch.flip(self._run_padded(torch.flip(x, dims=[3])), dims=[3]))
        return out * float(depth_scaling)

    def __call__(self, image: np.ndarray, known_depth: np.ndarray, known_mask: np.ndarray) -> np.ndarray:
        """image [H, W, 3] in [0, 1], known_depth [H, W] m (0: unknown), known_mask [H, W] -> [H, W] m."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise StitchError(f"depth completion image must be [H, W, 3], got {image.shape}")
        if known_depth.shape != image.shape[:2] or known_mask.shape != image.shape[:2]:
            raise StitchError(
                f"known_depth {known_depth.shape} and known_mask {known_mask.shape} must match the image "
                f"{image.shape[:2]}"
            )
        p = next(self.model.parameters())
        mask = known_mask.astype(bool) & np.isfinite(known_depth) & (known_depth > 0)
        scaling = self.config.depth_scaling if mask.any() else self.config.first_view_scaling
        rgb = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
        sparse = torch.from_numpy(np.where(mask, known_depth, 0.0).astype(np.float32))[None, None]
        m = torch.from_numpy(mask)[None, None]
        depth = self.predict(rgb.to(p.device), sparse.to(p.device), m.to(p.device), scaling)
        out = depth[0, 0].float().cpu().numpy()
        if not np.isfinite(out).all():
            # fp16 overflow (or broken weights): a silent 1 mm floor would seed a wall at the camera.
            bad = int((~np.isfinite(out)).sum())
            raise StitchError(
                f"the {self.name} depth network returned NaN/Inf at {bad} of {out.size} pixels "
                f"(dtype {p.dtype}); rerun in float32 (--device cpu) or check the weights"
            )
        out = np.maximum(out, self.model.config.min_depth).astype(np.float32)  # positivity floor only
        if self.config.keep_known:
            out = np.where(mask, known_depth.astype(np.float32), out)
        return out


def _place(net, device, dtype):
    device = torch.device(device) if device is not None else resolve_device("auto")
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    return net.to(device=device, dtype=dtype).eval()
