"""The depth completion network: RGB + sparse metric depth + mask in, dense metric depth out.

API (what the pipeline and the training code use):

    model = DepthCompletionModel.from_pretrained(path_or_hub_id)  # folder: config.json + model.safetensors
    depth = model(rgb, sparse_depth, mask)                          # -> [B, 1, H, W] metres
        rgb          [B, 3, H, W] float in [0, 1]
        sparse_depth [B, 1, H, W] float metres, 0 where unknown
        mask         [B, 1, H, W] bool/float, 1 where sparse_depth is known (None: sparse_depth > 0)
        depth_scaling (keyword, default 1.0): the release's "scaling": sparse depth enters as
                      depth / (scaling * 10), the output is multiplied by scaling (0.5 for generated views).
    model.save_pretrained(folder)
    DepthCompletionModel.tiny(seed)            # a few-k-parameter model for tests (CPU, milliseconds)
    DepthCompletionModel.paper_config()        # ZoeD-N sized config (BEiT-L 384), random weights
    DepthCompletionModel.from_monocular(id)    # init from a transformers ZoeDepth checkpoint (3 -> 5 ch)
    DepthCompletionModel.from_invisible_stitch(path_or_repo)  # the paper's released checkpoint

Any input size works: the network runs at `config.net_size` (the release uses 384 x 512) or, when that is
None, at the input size rounded to a multiple of `size_multiple`; the output is resized back to H x W.
The architecture is transformers' ZoeDepthForDepthEstimation with its patch-embedding convolution widened
from 3 to 5 input channels (early fusion, as in Invisible Stitch); the two new channels start at zero so a
monocular checkpoint behaves exactly as before until training teaches it to use the known depth.
Its config.json and architecture presets are in completion/network/config.py; finding a saved folder (or hub
id) is completion/network/folder.py.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from completion.network.config import (
    CONFIG_NAME,
    EXTRA_CHANNELS,
    MODEL_TYPE,
    WEIGHTS_NAME,
    CompletionConfig,
    paper_zoedepth_dict,
    tiny_zoedepth_dict,
)
from completion.network.folder import resolve_folder
from splat.errors import ModelUnavailableError, StitchError


def _zoe_config(zoe: dict):
    from transformers import ZoeDepthConfig

    return ZoeDepthConfig(**copy.deepcopy(zoe))


def _patch_embedding(zoe: nn.Module) -> nn.Module:
    """The backbone's patch-embedding module (has `.projection`, a Conv2d)."""
    emb = zoe.backbone.embeddings if hasattr(zoe.backbone, "embeddings") else zoe.backbone.beit.embeddings
    return emb.patch_embeddings


def widen_patch_embedding(zoe: nn.Module, extra: int = EXTRA_CHANNELS) -> None:
    """Give the backbone's first conv `extra` more input channels, zero-initialised (same output)."""
    pe = _patch_embedding(zoe)
    old: nn.Conv2d = pe.projection
    new = nn.Conv2d(
        old.in_channels + extra,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        bias=old.bias is not None,
    ).to(device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        if old.bias is not None:
            new.bias.copy_(old.bias)
    pe.projection = new
    pe.num_channels = new.in_channels
    zoe.config.backbone_config.num_channels = new.in_channels
    zoe.backbone.config.num_channels = new.in_channels


class DepthCompletionModel(nn.Module):
    """ZoeDepth with early fusion of sparse depth + mask; see the module docstring for the API."""

    def __init__(self, config: CompletionConfig) -> None:
        super().__init__()
        from transformers import ZoeDepthForDepthEstimation

        if not config.zoedepth:
            raise StitchError("CompletionConfig.zoedepth is empty; use .tiny() or .paper_config()")
        self.config = config
        zcfg = _zoe_config(config.zoedepth)
        if zcfg.backbone_config.num_channels != 3 + EXTRA_CHANNELS:
            raise StitchError(
                f"completion backbone needs {3 + EXTRA_CHANNELS} input channels, config has "
                f"{zcfg.backbone_config.num_channels}; use from_monocular() to widen a 3-channel model"
            )
        self.zoe = ZoeDepthForDepthEstimation(zcfg)
        self._spread_seed_bins()

    def _spread_seed_bins(self) -> None:
        """A fresh random ZoeDepth starts with every bin centre at softplus(0) = 0.69 m (its regressor
        output is ~0), so its depth is a constant that moves very slowly. Spread the seed bins over the
        output range instead (checkpoints loaded afterwards overwrite this)."""
        head = getattr(self.zoe, "metric_head", None)
        reg = getattr(head, "seed_bin_regressor", None)
        if reg is None or getattr(reg, "bin_centers_type", "") != "softplus":
            return
        conv = reg.conv2
        n = conv.out_channels
        lo, hi = self.config.min_depth, self.config.max_depth
        centres = torch.linspace(lo + (hi - lo) / (2 * n), hi - (hi - lo) / (2 * n), n)
        with torch.no_grad():
            conv.bias.copy_(centres + torch.log(-torch.expm1(-centres)))  # softplus^-1

    # --- construction ------------------------------------------------------------------------------

    @classmethod
    def tiny(cls, seed: int = 0, net_size: tuple[int, int] | None = None, **kw) -> DepthCompletionModel:
        """A tiny random model for tests and smoke runs (runs in milliseconds on CPU).

        Its conv/linear weights are unit-gain normal (std 1/sqrt(fan_in)): with transformers' default small
        init a random ZoeDepth outputs a constant map and trains very slowly from scratch."""
        torch.manual_seed(seed)
        model = cls(CompletionConfig(zoedepth=tiny_zoedepth_dict(**kw), net_size=net_size))
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                    nn.init.normal_(m.weight, std=(1.0 / m.weight[0].numel()) ** 0.5)
            model._spread_seed_bins()
        return model

    @classmethod
    def paper_config(cls, net_size: tuple[int, int] | None = (384, 512)) -> CompletionConfig:
        return CompletionConfig(zoedepth=paper_zoedepth_dict(), net_size=net_size)

    @classmethod
    def from_monocular(
        cls, model_id_or_path: str, net_size: tuple[int, int] | None = (384, 512), **hub_kw
    ) -> DepthCompletionModel:
        """Initialise from a transformers ZoeDepth checkpoint (e.g. Intel/zoedepth-nyu), widened 3 -> 5 ch."""
        from transformers import ZoeDepthConfig, ZoeDepthForDepthEstimation

        try:
            cfg = ZoeDepthConfig.from_pretrained(model_id_or_path, **hub_kw)
            cfg.backbone_config.drop_path_rate = 0.0  # as MiDaS/ZoeDepth trained it
            mono = ZoeDepthForDepthEstimation.from_pretrained(model_id_or_path, config=cfg, **hub_kw)
        except OSError as exc:
            raise ModelUnavailableError(
                f"cannot load monocular ZoeDepth weights {model_id_or_path!r} ({exc.__class__.__name__}); "
                "download them on a connected machine or pass a local folder"
            ) from exc
        if _patch_embedding(mono).projection.in_channels == 3:
            widen_patch_embedding(mono)
        bins = mono.config.bin_configurations[0]
        config = CompletionConfig(
            zoedepth=mono.config.to_dict(),
            net_size=net_size,
            min_depth=float(bins.get("min_depth", 1e-3)),
            max_depth=float(bins.get("max_depth", 10.0)),
        )
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        model.config = config
        model.zoe = mono
        return model

    # --- properties ----------------------------------------------------------------------------------

    @property
    def patch_size(self) -> int:
        return int(self.zoe.patch_size)

    @property
    def size_multiple(self) -> int:
        """Network input sides are rounded to this (two patches, as MiDaS rounds BEiT-16 inputs to 32)."""
        return 2 * self.patch_size

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Backbone (transformer encoder) parameters: trained at lr / 10 in the paper's recipe."""
        return list(self.zoe.backbone.parameters())

    def decoder_parameters(self) -> list[nn.Parameter]:
        enc = {id(p) for p in self.encoder_parameters()}
        return [p for p in self.parameters() if id(p) not in enc]

    def net_hw(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) the network runs at for an input of height x width."""
        if self.config.net_size is not None:
            return int(self.config.net_size[0]), int(self.config.net_size[1])
        m = self.size_multiple
        return max(m, round(height / m) * m), max(m, round(width / m) * m)

    # --- forward -----------------------------------------------------------------------------------

    def prepare_inputs(
        self, rgb: Tensor, sparse_depth: Tensor, mask: Tensor | None = None, depth_scaling: float = 1.0
    ) -> Tensor:
        """The 5-channel network input [B, 5, H, W] (before resizing): normalised RGB, scaled depth, mask."""
        if rgb.ndim != 4 or rgb.shape[1] != 3:
            raise StitchError(f"rgb must be [B, 3, H, W] in [0, 1], got shape {tuple(rgb.shape)}")
        b, _, h, w = rgb.shape
        if sparse_depth.shape != (b, 1, h, w):
            raise StitchError(
                f"sparse_depth must be [B, 1, H, W] = {(b, 1, h, w)} metres (0 = unknown), "
                f"got {tuple(sparse_depth.shape)}"
            )
        if mask is None:
            mask = sparse_depth > 0
        if mask.shape != (b, 1, h, w):
            raise StitchError(f"mask must be [B, 1, H, W] = {(b, 1, h, w)}, got {tuple(mask.shape)}")
        if depth_scaling <= 0:
            raise StitchError(f"depth_scaling must be positive, got {depth_scaling}")
        dtype = self.dtype
        known = (mask > 0).to(dtype)
        sparse = torch.nan_to_num(sparse_depth.to(dtype), nan=0.0, posinf=0.0, neginf=0.0)
        sparse = sparse.clamp_min(0) * known
        known = known * (sparse > 0)
        rgb_n = (rgb.to(dtype) - self.config.rgb_mean) / self.config.rgb_std
        depth_n = sparse / (float(depth_scaling) * self.config.depth_norm)
        return torch.cat([rgb_n, depth_n, known], dim=1)

    def forward_normalized(self, x: Tensor, out_hw: tuple[int, int]) -> Tensor:
        """x [B, 5, H, W] from prepare_inputs -> depth [B, 1, *out_hw] in the network's units (scaling 1).

        As the release: all five channels are resized to the network size bilinearly with
        `align_corners=True` (ZoeDepth's MiDaS resize), the prediction is upsampled bicubically
        (`align_corners=False`), and the output is not capped (the attractor head has no upper bound; a cap at
        max_depth before the 0.5 depth scaling would stop every generated view at 5 m). Only a positivity
        floor (min_depth) remains, for bicubic undershoot at sharp edges. NaN/Inf pass through: callers that
        serve users turn them into an error (engine/backends/depth_network.py)."""
        h, w = x.shape[-2:]
        nh, nw = self.net_hw(h, w)
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=True)
        pred = self.zoe(pixel_values=x).predicted_depth  # [B, h', w']
        pred = pred.unsqueeze(1)
        if pred.shape[-2:] != tuple(out_hw):
            pred = F.interpolate(pred, size=tuple(out_hw), mode="bicubic", align_corners=False)
        return pred.clamp_min(self.config.min_depth)

    def forward(
        self, rgb: Tensor, sparse_depth: Tensor, mask: Tensor | None = None, depth_scaling: float = 1.0
    ) -> Tensor:
        """rgb [B,3,H,W] in [0,1], sparse_depth [B,1,H,W] m (0 unknown), mask [B,1,H,W] -> [B,1,H,W] m."""
        x = self.prepare_inputs(rgb, sparse_depth, mask, depth_scaling)
        return self.forward_normalized(x, rgb.shape[-2:]) * float(depth_scaling)

    # --- persistence -------------------------------------------------------------------------------

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write config.json + model.safetensors to `folder` (created); returns the folder."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_NAME).write_text(json.dumps(self.config.to_json_dict(), indent=2), encoding="utf-8")
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt", "model_type": MODEL_TYPE})
        return folder

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool | None = None,
        map_location: str | torch.device = "cpu",
    ) -> DepthCompletionModel:
        """Load from a local folder or a Hugging Face hub id (cache and HF_HUB_OFFLINE honoured)."""
        from safetensors.torch import load_file

        folder = resolve_folder(path_or_id, revision, cache_dir, local_files_only)
        try:
            raw = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
            cfg = CompletionConfig.from_json_dict(raw)
        except json.JSONDecodeError as exc:
            raise StitchError(f"{folder / CONFIG_NAME} is not valid JSON ({exc}); re-save the model") from exc
        model = cls(cfg)
        state = load_file(str(folder / WEIGHTS_NAME), device=str(map_location))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise StitchError(
                f"{folder / WEIGHTS_NAME} does not match its config: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}; re-save the model with save_pretrained"
            )
        return model.eval()

    @classmethod
    def from_invisible_stitch(
        cls,
        path_or_repo: str | Path = "paulengstler/invisible-stitch",
        filename: str = "invisible-stitch.pt",
        config: CompletionConfig | None = None,
        **hub_kw,
    ) -> DepthCompletionModel:
        """The paper's released checkpoint (original ZoeDepth naming), mapped strictly."""
        from completion.network.checkpoint import load_original_checkpoint

        return load_original_checkpoint(cls, path_or_repo, filename, config, **hub_kw)
