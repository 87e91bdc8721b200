"""The paper's released checkpoint in the original ZoeDepth naming <-> transformers' ZoeDepth naming.

The Invisible Stitch release (`paulengstler/invisible-stitch`, file `invisible-stitch.pt`) is a pickle
`{"model": state_dict}` of the original isl-org/ZoeDepth model (ZoeD-N on the MiDaS DPT BEiT-L-384 backbone,
timm BEiT blocks) with a 5-channel patch embedding. This module renames those keys onto
`transformers.ZoeDepthForDepthEstimation` (the naming of the installed transformers release, checked against
the live model), splits timm's fused qkv projection, drops buffers that transformers recomputes, and refuses
anything it does not recognise: every key is consumed exactly once and every parameter is filled.

Facts about the original naming come from the ZoeDepth / MiDaS sources and transformers'
`convert_zoedepth_to_hf.py`; the code here is our own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from splat.errors import ModelUnavailableError, StitchError

BEIT = "core.core.pretrained.model."
MIDAS = "core.core.pretrained."
SCRATCH = "core.core.scratch."
HF_BEIT = "backbone.beit."

# Original keys that hold no learned weights the transformers model needs: buffers it rebuilds itself,
# and the classification head of the timm BEiT that MiDaS never calls.
IGNORED = (
    re.compile(r"^core\.core\.pretrained\.model\.blocks\.\d+\.attn\.relative_position_index$"),
    re.compile(r"^core\.core\.pretrained\.model\.(fc_norm|head|norm)\.(weight|bias)$"),
    re.compile(r"^conditional_log_binomial\.log_binomial_transform\.(k_idx|K_minus_1)$"),
)

# One-to-one renames: (original regex, transformers template). Order does not matter: each original key
# must match exactly one rule (checked).
_N = r"(\d+)"
RENAMES: list[tuple[str, str]] = [
    # BEiT backbone (timm naming -> transformers 5 naming)
    (rf"{BEIT}cls_token", f"{HF_BEIT}embeddings.cls_token"),
    (rf"{BEIT}patch_embed\.proj\.(weight|bias)", f"{HF_BEIT}embeddings.patch_embeddings.projection.\\1"),
    (rf"{BEIT}blocks\.{_N}\.norm1\.(weight|bias)", f"{HF_BEIT}layers.\\1.layernorm_before.\\2"),
    (rf"{BEIT}blocks\.{_N}\.norm2\.(weight|bias)", f"{HF_BEIT}layers.\\1.layernorm_after.\\2"),
    (rf"{BEIT}blocks\.{_N}\.gamma_1", f"{HF_BEIT}layers.\\1.lambda_1"),
    (rf"{BEIT}blocks\.{_N}\.gamma_2", f"{HF_BEIT}layers.\\1.lambda_2"),
    (rf"{BEIT}blocks\.{_N}\.attn\.q_bias", f"{HF_BEIT}layers.\\1.attention.q_proj.bias"),
    (rf"{BEIT}blocks\.{_N}\.attn\.v_bias", f"{HF_BEIT}layers.\\1.attention.v_proj.bias"),
    (rf"{BEIT}blocks\.{_N}\.attn\.proj\.(weight|bias)", f"{HF_BEIT}layers.\\1.attention.o_proj.\\2"),
    (
        rf"{BEIT}blocks\.{_N}\.attn\.relative_position_bias_table",
        f"{HF_BEIT}layers.\\1.relative_position_bias.relative_position_bias_table",
    ),
    (rf"{BEIT}blocks\.{_N}\.mlp\.(fc1|fc2)\.(weight|bias)", f"{HF_BEIT}layers.\\1.mlp.\\2.\\3"),
    # DPT reassemble: readout projection (Linear in Sequential), 1x1 projection, resize (conv / deconv)
    (
        rf"{MIDAS}act_postprocess([1-4])\.0\.project\.0\.(weight|bias)",
        "neck.reassemble_stage.readout_projects.{0}.0.\\2",
    ),
    (rf"{MIDAS}act_postprocess([1-4])\.3\.(weight|bias)", "neck.reassemble_stage.layers.{0}.projection.\\2"),
    (rf"{MIDAS}act_postprocess([1-4])\.4\.(weight|bias)", "neck.reassemble_stage.layers.{0}.resize.\\2"),
    # DPT scratch: per-level 3x3 convs, fusion blocks (refinenet4 is the coarsest = transformers' layer 0)
    (rf"{SCRATCH}layer([1-4])_rn\.weight", "neck.convs.{0}.weight"),
    (
        rf"{SCRATCH}refinenet([1-4])\.resConfUnit([12])\.conv([12])\.(weight|bias)",
        "neck.fusion_stage.layers.{r}.residual_layer\\2.convolution\\3.\\4",
    ),
    (rf"{SCRATCH}refinenet([1-4])\.out_conv\.(weight|bias)", "neck.fusion_stage.layers.{r}.projection.\\2"),
    (rf"{SCRATCH}output_conv\.0\.(weight|bias)", "relative_head.conv1.\\1"),
    (rf"{SCRATCH}output_conv\.2\.(weight|bias)", "relative_head.conv2.\\1"),
    (rf"{SCRATCH}output_conv\.4\.(weight|bias)", "relative_head.conv3.\\1"),
    # ZoeDepth metric head
    (r"conv2\.(weight|bias)", "metric_head.conv2.\\1"),
    (r"seed_bin_regressor\._net\.0\.(weight|bias)", "metric_head.seed_bin_regressor.conv1.\\1"),
    (r"seed_bin_regressor\._net\.2\.(weight|bias)", "metric_head.seed_bin_regressor.conv2.\\1"),
    (r"seed_projector\._net\.0\.(weight|bias)", "metric_head.seed_projector.conv1.\\1"),
    (r"seed_projector\._net\.2\.(weight|bias)", "metric_head.seed_projector.conv2.\\1"),
    (r"projectors\.(\d+)\._net\.0\.(weight|bias)", "metric_head.projectors.\\1.conv1.\\2"),
    (r"projectors\.(\d+)\._net\.2\.(weight|bias)", "metric_head.projectors.\\1.conv2.\\2"),
    (r"attractors\.(\d+)\._net\.0\.(weight|bias)", "metric_head.attractors.\\1.conv1.\\2"),
    (r"attractors\.(\d+)\._net\.2\.(weight|bias)", "metric_head.attractors.\\1.conv2.\\2"),
    (
        r"conditional_log_binomial\.mlp\.([02])\.(weight|bias)",
        "metric_head.conditional_log_binomial.mlp.\\1.\\2",
    ),
]
_COMPILED = [(re.compile(f"^{pat}$"), tmpl) for pat, tmpl in RENAMES]
_QKV = re.compile(rf"^{re.escape(BEIT)}blocks\.(\d+)\.attn\.qkv\.weight$")


def _rename(key: str) -> str | None:
    """The transformers name of one original key (None if no rule matches)."""
    hits = [(rx.match(key), tmpl) for rx, tmpl in _COMPILED]
    hits = [(m, t) for m, t in hits if m]
    if len(hits) > 1:
        raise StitchError(f"internal: key {key} matches {len(hits)} rename rules")
    if not hits:
        return None
    m, tmpl = hits[0]
    out = m.expand(tmpl)
    if "{0}" in out:  # act_postprocessN / layerN_rn: 1-based level -> 0-based index
        out = out.replace("{0}", str(int(m.group(1)) - 1))
    if "{r}" in out:  # refinenetN: transformers orders fusion layers coarse to fine
        out = out.replace("{r}", str(4 - int(m.group(1))))
    return out


def strip_module_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop the 'module.' prefix that (Distributed)DataParallel adds when every key has it."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def original_to_hf(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Original ZoeDepth state dict -> transformers ZoeDepthForDepthEstimation state dict (names only).

    Raises StitchError listing keys that no rule knows (strict: nothing is silently dropped)."""
    state = strip_module_prefix(dict(state))
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if any(rx.match(key) for rx in IGNORED):
            continue
        m = _QKV.match(key)
        if m:
            i = m.group(1)
            if value.ndim != 2 or value.shape[0] % 3:
                raise StitchError(f"{key} has shape {tuple(value.shape)}; expected [3 * hidden, hidden]")
            q, k, v = value.chunk(3, dim=0)  # timm fuses q, k, v in that order
            for name, part in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
                out[f"{HF_BEIT}layers.{i}.attention.{name}.weight"] = part.clone()
            continue
        new = _rename(key)
        if new is None:
            unknown.append(key)
            continue
        if new in out:
            raise StitchError(f"two checkpoint keys map onto {new}; the checkpoint is malformed")
        out[new] = value
    if unknown:
        raise StitchError(
            f"checkpoint has {len(unknown)} keys this loader does not know (e.g. {unknown[:3]}); "
            "it is not an original ZoeDepth / Invisible Stitch checkpoint"
        )
    return out


# --- inverse (export to the original naming; used by tests to write checkpoints in that naming) --------

_INV_RULES: list[tuple[str, Callable[[re.Match], str]]] = [
    (rf"{HF_BEIT}embeddings\.cls_token", lambda m: f"{BEIT}cls_token"),
    (
        rf"{HF_BEIT}embeddings\.patch_embeddings\.projection\.(weight|bias)",
        lambda m: f"{BEIT}patch_embed.proj.{m[1]}",
    ),
    (rf"{HF_BEIT}layers\.(\d+)\.layernorm_before\.(\w+)", lambda m: f"{BEIT}blocks.{m[1]}.norm1.{m[2]}"),
    (rf"{HF_BEIT}layers\.(\d+)\.layernorm_after\.(\w+)", lambda m: f"{BEIT}blocks.{m[1]}.norm2.{m[2]}"),
    (rf"{HF_BEIT}layers\.(\d+)\.lambda_([12])", lambda m: f"{BEIT}blocks.{m[1]}.gamma_{m[2]}"),
    (rf"{HF_BEIT}layers\.(\d+)\.attention\.q_proj\.bias", lambda m: f"{BEIT}blocks.{m[1]}.attn.q_bias"),
    (rf"{HF_BEIT}layers\.(\d+)\.attention\.v_proj\.bias", lambda m: f"{BEIT}blocks.{m[1]}.attn.v_bias"),
    (rf"{HF_BEIT}layers\.(\d+)\.attention\.o_proj\.(\w+)", lambda m: f"{BEIT}blocks.{m[1]}.attn.proj.{m[2]}"),
    (
        rf"{HF_BEIT}layers\.(\d+)\.relative_position_bias\.relative_position_bias_table",
        lambda m: f"{BEIT}blocks.{m[1]}.attn.relative_position_bias_table",
    ),
    (rf"{HF_BEIT}layers\.(\d+)\.mlp\.(fc[12])\.(\w+)", lambda m: f"{BEIT}blocks.{m[1]}.mlp.{m[2]}.{m[3]}"),
    (
        r"neck\.reassemble_stage\.readout_projects\.(\d)\.0\.(\w+)",
        lambda m: f"{MIDAS}act_postprocess{int(m[1]) + 1}.0.project.0.{m[2]}",
    ),
    (
        r"neck\.reassemble_stage\.layers\.(\d)\.projection\.(\w+)",
        lambda m: f"{MIDAS}act_postprocess{int(m[1]) + 1}.3.{m[2]}",
    ),
    (
        r"neck\.reassemble_stage\.layers\.(\d)\.resize\.(\w+)",
        lambda m: f"{MIDAS}act_postprocess{int(m[1]) + 1}.4.{m[2]}",
    ),
    (r"neck\.convs\.(\d)\.weight", lambda m: f"{SCRATCH}layer{int(m[1]) + 1}_rn.weight"),
    (
        r"neck\.fusion_stage\.layers\.(\d)\.residual_layer([12])\.convolution([12])\.(\w+)",
        lambda m: f"{SCRATCH}refinenet{4 - int(m[1])}.resConfUnit{m[2]}.conv{m[3]}.{m[4]}",
    ),
    (
        r"neck\.fusion_stage\.layers\.(\d)\.projection\.(\w+)",
        lambda m: f"{SCRATCH}refinenet{4 - int(m[1])}.out_conv.{m[2]}",
    ),
    (
        r"relative_head\.conv([123])\.(\w+)",
        lambda m: f"{SCRATCH}output_conv.{2 * (int(m[1]) - 1)}.{m[2]}",
    ),
    (r"metric_head\.conv2\.(\w+)", lambda m: f"conv2.{m[1]}"),
    (
        r"metric_head\.(seed_bin_regressor|seed_projector)\.conv([12])\.(\w+)",
        lambda m: f"{m[1]}._net.{2 * (int(m[2]) - 1)}.{m[3]}",
    ),
    (
        r"metric_head\.(projectors|attractors)\.(\d+)\.conv([12])\.(\w+)",
        lambda m: f"{m[1]}.{m[2]}._net.{2 * (int(m[3]) - 1)}.{m[4]}",
    ),
    (
        r"metric_head\.conditional_log_binomial\.mlp\.([02])\.(\w+)",
        lambda m: f"conditional_log_binomial.mlp.{m[1]}.{m[2]}",
    ),
]
_INV = [(re.compile(f"^{p}$"), f) for p, f in _INV_RULES]
_HF_QKV = re.compile(rf"^{re.escape(HF_BEIT)}layers\.(\d+)\.attention\.([qkv])_proj\.weight$")


def hf_to_original(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """transformers ZoeDepth state dict -> original ZoeDepth naming (qkv fused, timm block names)."""
    out: dict[str, Tensor] = {}
    qkv: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        m = _HF_QKV.match(key)
        if m:
            qkv.setdefault(m[1], {})[m[2]] = value
            continue
        for rx, fn in _INV:
            mm = rx.match(key)
            if mm:
                out[fn(mm)] = value.clone()
                break
        else:
            raise StitchError(f"no original-naming rule for {key}")
    for i, parts in qkv.items():
        out[f"{BEIT}blocks.{i}.attn.qkv.weight"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


# --- loading -------------------------------------------------------------------------------------------


def load_original_state_dict(zoe: torch.nn.Module, state: dict[str, Tensor]) -> None:
    """Load an original-naming state dict into a transformers ZoeDepthForDepthEstimation, strictly."""
    mapped = original_to_hf(state)
    target = zoe.state_dict()
    missing = sorted(set(target) - set(mapped))
    unexpected = sorted(set(mapped) - set(target))
    if missing or unexpected:
        raise StitchError(
            f"checkpoint does not fit the model: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}); the model config does not match it"
        )
    bad = [
        (k, tuple(v.shape), tuple(target[k].shape)) for k, v in mapped.items() if v.shape != target[k].shape
    ]
    if bad:
        k, got, want = bad[0]
        raise StitchError(
            f"{len(bad)} checkpoint tensors have the wrong shape (e.g. {k}: {got}, model wants {want}); "
            "the model config does not match the checkpoint"
        )
    zoe.load_state_dict(mapped, strict=True)


def _resolve_file(path_or_repo: str | Path, filename: str, **hub_kw) -> Path:
    p = Path(path_or_repo).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        if (p / filename).is_file():
            return p / filename
        raise ModelUnavailableError(f"{p} has no {filename}; download it or give the file's path")
    if str(path_or_repo).startswith((".", "/", "~")) or str(path_or_repo).count("/") != 1:
        raise ModelUnavailableError(f"checkpoint {path_or_repo} does not exist; check the path")
    from huggingface_hub import hf_hub_download

    if "local_files_only" not in hub_kw:  # HF_HUB_OFFLINE read now, not only at huggingface_hub's import
        hub_kw["local_files_only"] = os.environ.get("HF_HUB_OFFLINE", "").upper() in (
            "1",
            "ON",
            "YES",
            "TRUE",
        )
    try:
        return Path(hf_hub_download(str(path_or_repo), filename, **hub_kw))
    except Exception as exc:  # offline, missing repo, network: one clear line
        raise ModelUnavailableError(
            f"cannot get {filename} from {path_or_repo!r} ({exc.__class__.__name__}); on a connected machine "
            f"run `stitch models download {path_or_repo}`, or pass the local path of {filename}"
        ) from exc


def read_original_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """torch.load(weights_only=True) a `{"model": state_dict}` (or bare state dict) file."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused or corrupt file
        raise StitchError(f"cannot read checkpoint {path} safely ({exc.__class__.__name__}: {exc})") from exc
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise StitchError(f"{path} is not a state dict (expected {{'model': {{name: tensor}}}})")
    return obj


def load_original_checkpoint(cls, path_or_repo, filename, config=None, **hub_kw):
    """DepthCompletionModel with the weights of an original-naming checkpoint (default: the paper's)."""
    file = _resolve_file(path_or_repo, filename, **hub_kw)
    state = read_original_checkpoint(file)
    model = cls(config if config is not None else cls.paper_config())
    load_original_state_dict(model.zoe, state)
    return model.eval()


def save_original_checkpoint(model, path: str | Path) -> Path:
    """Write `{"model": state_dict}` in the original naming (what the release's train.py saved)."""
    path = Path(path)
    torch.save({"model": hf_to_original(model.zoe.state_dict())}, str(path))
    return path
