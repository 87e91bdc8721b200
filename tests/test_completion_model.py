"""The depth completion network: API, early fusion, normalisation, save/load, the paper's checkpoint."""

from __future__ import annotations

import pickle

import pytest
import torch

pytest.importorskip("transformers")

from completion.network.checkpoint import (
    hf_to_original,
    original_to_hf,
    read_original_checkpoint,
    save_original_checkpoint,
)
from completion.network.config import tiny_zoedepth_dict
from completion.network.model import DepthCompletionModel
from splat.errors import ModelUnavailableError, StitchError


def _spread(model: DepthCompletionModel, seed: int = 0) -> DepthCompletionModel:
    """Unit-gain random weights: the default small init gives a near-constant map that hides mistakes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            fan = p[0].numel() if p.ndim > 1 else 1
            p.copy_(torch.randn(p.shape, generator=g) * (1.0 / fan) ** 0.5)
    return model.eval()


def _inputs(b=2, h=24, w=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(b, 3, h, w, generator=g)
    sparse = 1 + 3 * torch.rand(b, 1, h, w, generator=g)
    sparse[:, :, : h // 2] = 0
    return rgb, sparse, sparse > 0


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return _spread(DepthCompletionModel.tiny(seed=0))


def test_any_size_metric_range_and_shape(model):
    for h, w in ((24, 40), (17, 29)):
        rgb, sparse, mask = _inputs(h=h, w=w)
        with torch.no_grad():
            d = model(rgb, sparse, mask)
        assert d.shape == (2, 1, h, w)
        assert torch.isfinite(d).all() and d.min() >= 1e-3 and d.max() <= 10.0


def test_sparse_depth_changes_prediction_and_scaling_follows_release(model):
    rgb, sparse, mask = _inputs()
    with torch.no_grad():
        mono = model(rgb, torch.zeros_like(sparse), torch.zeros_like(mask))
        comp = model(rgb, sparse, mask)
        # the release: input depth / (scaling * 10), output * scaling
        scaled = model(rgb, sparse * 2, mask, depth_scaling=2.0)
    assert (mono - comp).abs().max() > 1e-4  # the extra channels are wired in
    torch.testing.assert_close(scaled, 2 * comp.clamp(1e-3, 10), rtol=1e-5, atol=1e-5)


def test_network_input_normalisation(model):
    rgb, sparse, mask = _inputs()
    x = model.prepare_inputs(rgb, sparse, mask, depth_scaling=0.5)
    torch.testing.assert_close(x[:, :3], (rgb - 0.5) / 0.5)
    torch.testing.assert_close(x[:, 3:4], sparse / 5.0)
    torch.testing.assert_close(x[:, 4:5], mask.float())


def test_widened_monocular_model_keeps_its_output_at_start(tmp_path):
    """from_monocular: 3 -> 5 channels, new channels zero: same depth as the mono model."""
    from transformers import ZoeDepthConfig, ZoeDepthForDepthEstimation

    zd = tiny_zoedepth_dict()
    zd["backbone_config"]["num_channels"] = 3
    torch.manual_seed(1)
    mono = _spread(ZoeDepthForDepthEstimation(ZoeDepthConfig(**zd)), seed=1)
    mono.save_pretrained(tmp_path / "mono")
    model = DepthCompletionModel.from_monocular(str(tmp_path / "mono"), net_size=None).eval()
    w = model.zoe.backbone.beit.embeddings.patch_embeddings.projection.weight
    assert w.shape[1] == 5 and w[:, 3:].abs().max() == 0
    rgb, sparse, mask = _inputs(h=32, w=48)
    with torch.no_grad():
        ref = mono(pixel_values=(rgb - 0.5) / 0.5).predicted_depth[:, None]
        # The release's wrapper: bicubic upsampling, no cap, a positivity floor only.
        ref = torch.nn.functional.interpolate(ref, size=(32, 48), mode="bicubic").clamp_min(1e-3)
        torch.testing.assert_close(model(rgb, sparse, mask), ref, rtol=1e-4, atol=1e-5)


def test_save_pretrained_round_trip_and_offline_error(model, tmp_path, monkeypatch):
    model.save_pretrained(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"config.json", "model.safetensors"}
    loaded = DepthCompletionModel.from_pretrained(tmp_path / "m")
    rgb, sparse, mask = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(rgb, sparse, mask), model(rgb, sparse, mask))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="not available offline"):
        DepthCompletionModel.from_pretrained("nobody/not-a-completion-model", cache_dir=tmp_path / "cache")


def test_bad_inputs_raise_one_line_errors(model):
    rgb, sparse, mask = _inputs()
    with pytest.raises(StitchError, match="rgb must be"):
        model(rgb[:, :2], sparse, mask)
    with pytest.raises(StitchError, match="sparse_depth must be"):
        model(rgb, sparse[..., :-1], mask)


# --- the paper's checkpoint (original ZoeDepth naming) --------------------------------------------------


def test_original_naming_facts_and_round_trip(model, tmp_path):
    orig = hf_to_original(model.zoe.state_dict())
    # names as the original ZoeDepth / MiDaS BEiT code writes them
    for key in (
        "core.core.pretrained.model.patch_embed.proj.weight",
        "core.core.pretrained.model.cls_token",
        "core.core.pretrained.model.blocks.0.attn.qkv.weight",
        "core.core.pretrained.model.blocks.0.attn.q_bias",
        "core.core.pretrained.model.blocks.0.attn.relative_position_bias_table",
        "core.core.pretrained.model.blocks.3.gamma_2",
        "core.core.pretrained.act_postprocess1.0.project.0.weight",
        "core.core.pretrained.act_postprocess4.4.weight",
        "core.core.scratch.layer1_rn.weight",
        "core.core.scratch.refinenet4.resConfUnit2.conv1.weight",
        "core.core.scratch.output_conv.4.bias",
        "seed_bin_regressor._net.2.weight",
        "attractors.3._net.0.weight",
        "conditional_log_binomial.mlp.2.bias",
        "conv2.weight",
    ):
        assert key in orig, key
    assert orig["core.core.pretrained.model.patch_embed.proj.weight"].shape[1] == 5
    # refinenet1 is the finest fusion block = transformers' last fusion layer
    torch.testing.assert_close(
        orig["core.core.scratch.refinenet1.out_conv.weight"],
        model.zoe.state_dict()["neck.fusion_stage.layers.3.projection.weight"],
    )
    # timm's fused qkv = q, k, v stacked
    sd = model.zoe.state_dict()
    qkv = orig["core.core.pretrained.model.blocks.1.attn.qkv.weight"]
    torch.testing.assert_close(qkv[32:64], sd["backbone.beit.layers.1.attention.k_proj.weight"])

    # buffers the original files also carry are accepted and dropped
    orig["core.core.pretrained.model.blocks.0.attn.relative_position_index"] = torch.zeros(
        5, 5, dtype=torch.long
    )
    orig["conditional_log_binomial.log_binomial_transform.k_idx"] = torch.arange(4)
    path = tmp_path / "invisible-stitch.pt"
    torch.save({"model": {f"module.{k}": v for k, v in orig.items()}}, path)  # as saved under DDP
    loaded = DepthCompletionModel.from_invisible_stitch(tmp_path, config=model.config)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    rgb, sparse, mask = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(rgb, sparse, mask), model(rgb, sparse, mask))


def test_strict_loading_refuses_unknown_missing_and_misshapen(model, tmp_path):
    orig = hf_to_original(model.zoe.state_dict())
    with pytest.raises(StitchError, match="does not know"):
        original_to_hf({**orig, "core.core.pretrained.model.blocks.0.attn.extra": torch.zeros(1)})
    short = dict(orig)
    del short["attractors.0._net.0.weight"]
    save = tmp_path / "short.pt"
    torch.save({"model": short}, save)
    with pytest.raises(StitchError, match="1 missing"):
        DepthCompletionModel.from_invisible_stitch(save, config=model.config)
    bad = dict(orig)
    bad["conv2.weight"] = torch.zeros(3, 3, 1, 1)
    torch.save({"model": bad}, save)
    with pytest.raises(StitchError, match="wrong shape"):
        DepthCompletionModel.from_invisible_stitch(save, config=model.config)


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_checkpoint_read_is_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump({"model": {"x": _Evil()}}, f, protocol=2)
    with pytest.raises(StitchError, match="safely"):
        read_original_checkpoint(path)


def test_missing_checkpoint_file_is_one_clear_line(tmp_path):
    with pytest.raises(ModelUnavailableError, match=r"has no invisible-stitch\.pt"):
        DepthCompletionModel.from_invisible_stitch(tmp_path)


def test_save_original_checkpoint_writes_model_key(model, tmp_path):
    path = save_original_checkpoint(model, tmp_path / "x.pt")
    obj = torch.load(path, weights_only=True)
    assert set(obj) == {"model"} and "core.core.pretrained.model.patch_embed.proj.bias" in obj["model"]


def test_paper_checkpoint_offline_is_one_clear_line(model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="stitch models download paulengstler/invisible-stitch"):
        DepthCompletionModel.from_invisible_stitch(config=model.config, cache_dir=str(tmp_path / "cache"))
