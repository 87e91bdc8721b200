"""What the completion network is built from: its stored config.json and the ZoeDepth architecture presets.

`CompletionConfig` is everything needed to rebuild a `DepthCompletionModel` (written next to the weights by
save_pretrained); `tiny_zoedepth_dict` and `paper_zoedepth_dict` are the 5-channel ZoeDepth architectures it
wraps (test size and the paper's ZoeD-N).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from splat.errors import StitchError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_TYPE = "stitch-depth-completion"
FORMAT_VERSION = 1
EXTRA_CHANNELS = 2  # sparse depth, mask


@dataclass(frozen=True)
class CompletionConfig:
    """Everything needed to rebuild the network; stored as config.json next to the weights."""

    zoedepth: dict = field(default_factory=dict)  # transformers ZoeDepthConfig.to_dict(), 5-channel backbone
    net_size: tuple[int, int] | None = (384, 512)  # (H, W) the network runs at; None: input size, rounded
    min_depth: float = 1e-3  # positivity floor of the output (metres)
    max_depth: float = 10.0  # training range (targets, seed bins); the output is not capped at it
    depth_norm: float = 10.0  # sparse depth enters as depth / (scaling * depth_norm)
    rgb_mean: float = 0.5  # RGB normalisation (MiDaS BEiT): (rgb - mean) / std
    rgb_std: float = 0.5

    def to_json_dict(self) -> dict:
        d = asdict(self)
        d["net_size"] = list(self.net_size) if self.net_size is not None else None
        return {"model_type": MODEL_TYPE, "format_version": FORMAT_VERSION, **d}

    @classmethod
    def from_json_dict(cls, d: dict) -> CompletionConfig:
        if d.get("model_type") != MODEL_TYPE:
            raise StitchError(
                f"config.json has model_type {d.get('model_type')!r}, expected {MODEL_TYPE!r}; "
                "point --depth at a folder written by DepthCompletionModel.save_pretrained"
            )
        keys = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in keys}
        if kw.get("net_size") is not None:
            kw["net_size"] = tuple(int(s) for s in kw["net_size"])
        return cls(**kw)


def tiny_zoedepth_dict(hidden: int = 32, layers: int = 4, patch: int = 8, n_bins: int = 16) -> dict:
    """A ZoeDepth config small enough for CPU tests (BEiT backbone, relative position bias, 5 channels)."""
    from transformers import BeitConfig, ZoeDepthConfig

    backbone = BeitConfig(
        image_size=4 * patch,
        patch_size=patch,
        num_channels=3 + EXTRA_CHANNELS,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        use_relative_position_bias=True,
        reshape_hidden_states=False,
        drop_path_rate=0.0,  # MiDaS builds timm BEiT without stochastic depth
        out_features=[f"stage{i}" for i in range(1, layers + 1)][-4:],
    )
    cfg = ZoeDepthConfig(
        backbone_config=backbone,
        neck_hidden_sizes=[hidden // 4, hidden // 2, hidden, hidden],
        fusion_hidden_size=16,
        bottleneck_features=16,
        num_relative_features=8,
        bin_embedding_dim=16,
        num_attractors=[4, 2, 2, 1],
        bin_configurations=[{"n_bins": n_bins, "min_depth": 1e-3, "max_depth": 10.0}],
    )
    return cfg.to_dict()


def paper_zoedepth_dict() -> dict:
    """ZoeD-N (MiDaS DPT BEiT-L-384 backbone, 64 bins, attractors [16, 8, 4, 1]) with 5 input channels."""
    from transformers import BeitConfig, ZoeDepthConfig

    backbone = BeitConfig(
        image_size=384,
        num_channels=3 + EXTRA_CHANNELS,
        num_hidden_layers=24,
        hidden_size=1024,
        intermediate_size=4096,
        num_attention_heads=16,
        use_relative_position_bias=True,
        reshape_hidden_states=False,
        drop_path_rate=0.0,  # MiDaS builds timm BEiT without stochastic depth
        out_features=["stage6", "stage12", "stage18", "stage24"],
    )
    cfg = ZoeDepthConfig(
        backbone_config=backbone,
        neck_hidden_sizes=[256, 512, 1024, 1024],
        bin_centers_type="softplus",
        bin_configurations=[{"n_bins": 64, "min_depth": 1e-3, "max_depth": 10.0}],
    )
    return cfg.to_dict()
