"""Backends from command-line specs: `--outpainter` / `--depth` strings -> Outpainter / DepthCompleter.

Outpainter specs:
    classical               offline default, exemplar synthesis (outpaint_classical.ClassicalOutpainter)
    mirror                  the earlier offline method: reflection across the seam + smooth fill
    sd2                     Stable Diffusion 2 inpainting (registry sd2-inpainting), known pixels pasted back
    sd2-avae                the same with the asymmetric VAE of the release (sharper known region)
    KEY | ORG/NAME[@REV] | DIR   any diffusers inpainting pipeline: registry key, hub id, local folder
    OUTPAINTER+VAE          any of the above with a VAE (registry key, hub id or folder) swapped in
Depth specs:
    classical               geometric completion of the known depth (engine.backends.depth_classical)
    invisible-stitch        the paper's completion network checkpoint (paulengstler/invisible-stitch)
    mono | mono:KEY|ID|DIR  a transformers monocular depth model + robust scale & shift alignment
    network:ID|DIR          a completion network saved by DepthCompletionModel.save_pretrained
    DIR | FILE.pt           a local completion network (save_pretrained folder or original-naming .pt)
    ORG/NAME[@REV]          a completion network on the hub

Weights are found first (models.resolve: --model-path, the HF cache; never a download unless asked) and
only then loaded, so a missing model fails with one line before anything heavy happens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path

from engine.backends.model_registry import DEFAULT_MONO, REGISTRY, lookup
from engine.backends.models import ResolvedModel, resolve
from splat.errors import StitchError

OUTPAINTER_ALIASES = {"sd2": "sd2-inpainting", "sd2-avae": "sd2-inpainting+asymmetric-vae"}
PRESET_NAMES = ("paper", "offline")


@dataclass(frozen=True)
class BackendPlan:
    """A parsed spec with its weights located (not loaded yet)."""

    role: str  # "outpainter" | "depth"
    backend: str  # classical | diffusion | mono | network | invisible-stitch
    spec: str  # what the user wrote
    models: tuple[ResolvedModel, ...] = ()

    def describe(self) -> dict:
        return {"backend": self.backend, "spec": self.spec, "models": [m.to_manifest() for m in self.models]}


def _split_revision(name: str) -> tuple[str, str | None]:
    """'org/name@rev' -> ('org/name', 'rev'); local paths are never split."""
    if "@" in name and not Path(name).expanduser().exists():
        base, _, rev = name.rpartition("@")
        if base and rev:
            return base, rev
    return name, None


def _resolve(name: str, kind: str, **kw) -> ResolvedModel:
    base, rev = _split_revision(name)
    return resolve(base, kind=kind, revision=rev, **kw)


def plan_outpainter(
    spec: str, *, model_path=None, cache_dir=None, allow_download: bool = False
) -> BackendPlan:
    spec = (spec or "classical").strip()
    if spec in ("classical", "mirror"):  # mirror: the earlier offline method, kept for comparison
        return BackendPlan("outpainter", spec, spec)
    expanded = OUTPAINTER_ALIASES.get(spec, spec)
    main, _, vae = expanded.partition("+")
    kw = {"model_path": model_path, "cache_dir": cache_dir, "allow_download": allow_download}
    models = [_resolve(OUTPAINTER_ALIASES.get(main, main), "diffusers-inpaint", **kw)]
    if vae:
        models.append(_resolve(vae, "diffusers-vae", **kw))
    return BackendPlan("outpainter", "diffusion", spec, tuple(models))


def _local_depth_backend(path: Path) -> str:
    """Which depth backend a local file/folder holds (by its files)."""
    if path.is_file():
        if path.suffix in (".pt", ".pth"):
            return "invisible-stitch"
        raise StitchError(f"{path} is not a depth model; give a folder or an original-naming .pt checkpoint")
    cfg_file = path / "config.json"
    if cfg_file.is_file():
        try:
            model_type = json.loads(cfg_file.read_text(encoding="utf-8")).get("model_type")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StitchError(f"{cfg_file} is not valid JSON ({exc}); re-save the model") from exc
        from completion.network.config import MODEL_TYPE

        return "network" if model_type == MODEL_TYPE else "mono"
    if (path / "invisible-stitch.pt").is_file():
        return "invisible-stitch"
    raise StitchError(
        f"{path} holds no depth model (no config.json, no invisible-stitch.pt); check --depth or --model-path"
    )


def plan_depth_completer(
    spec: str, *, model_path=None, cache_dir=None, allow_download: bool = False
) -> BackendPlan:
    spec = (spec or "classical").strip()
    kw = {"model_path": model_path, "cache_dir": cache_dir, "allow_download": allow_download}
    if spec == "classical":
        return BackendPlan("depth", "classical", spec)
    if spec == "invisible-stitch":
        return BackendPlan(
            "depth", "invisible-stitch", spec, (_resolve("invisible-stitch", "completion-checkpoint", **kw),)
        )
    if spec == "mono" or spec.startswith("mono:"):
        name = spec.partition(":")[2] or DEFAULT_MONO
        return BackendPlan("depth", "mono", spec, (_resolve(name, "transformers-depth", **kw),))
    if spec.startswith("network:"):
        name = spec.partition(":")[2]
        if not name:
            raise StitchError("--depth network: needs a folder or hub id, e.g. network:./my-completion-model")
        model = _resolve(name, "completion-folder", **kw)
        backend = _local_depth_backend(model.path) if model.source == "local" else "network"
        return BackendPlan("depth", backend, spec, (model,))
    p = Path(spec).expanduser()
    if p.exists():
        model = _resolve(spec, "completion-folder", **kw)
        return BackendPlan("depth", _local_depth_backend(p), spec, (model,))
    entry = lookup(spec)
    if entry is not None and entry.kind == "transformers-depth":
        return BackendPlan("depth", "mono", spec, (_resolve(spec, "transformers-depth", **kw),))
    if entry is not None and entry.kind == "completion-checkpoint":
        return BackendPlan(
            "depth", "invisible-stitch", spec, (_resolve(spec, "completion-checkpoint", **kw),)
        )
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        return BackendPlan("depth", "network", spec, (_resolve(spec, "completion-folder", **kw),))
    raise StitchError(
        f"unknown --depth {spec!r}; use classical, invisible-stitch, mono, mono:ID, network:DIR or a folder"
    )


def _config_from(cls, base, options: dict, role: str):
    """Dataclass config from `base` with matching `options` applied; unknown options are an error."""
    names = {f.name for f in fields(cls)}
    unknown = set(options) - names
    if unknown:
        raise StitchError(f"unknown {role} options {sorted(unknown)}; known: {sorted(names)}")
    return replace(base or cls(), **options)


def load_outpainter(plan: BackendPlan, *, device=None, dtype=None, config=None, **options):
    if plan.backend == "classical":
        from engine.backends.outpaint_classical import ClassicalOutpainter

        return ClassicalOutpainter()
    if plan.backend == "mirror":
        from engine.backends.outpaint_classical import MirrorOutpainter

        return MirrorOutpainter()
    from engine.backends.outpaint_diffusion import DiffusionOutpaintConfig, DiffusionOutpainter

    cfg = _config_from(DiffusionOutpaintConfig, config, options, "outpainter")
    vae = plan.models[1] if len(plan.models) > 1 else None
    return DiffusionOutpainter.from_pretrained(
        plan.models[0], vae=vae, config=cfg, device=device, dtype=dtype
    )


def load_depth_completer(
    plan: BackendPlan, *, device=None, dtype=None, config=None, model_config=None, **options
):
    if plan.backend == "classical":
        from engine.backends.depth_classical import ClassicalDepthCompleter

        return ClassicalDepthCompleter()
    if plan.backend == "mono":
        from engine.backends.depth_mono import MonoDepthCompleter, MonoDepthConfig

        cfg = _config_from(MonoDepthConfig, config, options, "mono depth")
        return MonoDepthCompleter.from_pretrained(plan.models[0], config=cfg, device=device, dtype=dtype)
    from engine.backends.depth_network import NetworkDepthCompleter, NetworkDepthConfig

    cfg = _config_from(NetworkDepthConfig, config, options, "depth network")
    if plan.backend == "invisible-stitch":
        return NetworkDepthCompleter.from_invisible_stitch(
            plan.models[0], config=cfg, device=device, dtype=dtype, model_config=model_config
        )
    return NetworkDepthCompleter.from_pretrained(plan.models[0], config=cfg, device=device, dtype=dtype)


def build_outpainter(
    spec: str,
    *,
    model_path=None,
    cache_dir=None,
    allow_download: bool = False,
    device=None,
    dtype=None,
    prompt: str | None = None,  # accepted for the caller's convenience; the prompt is given per call
    **options,
):
    """`--outpainter` spec -> Outpainter. options: DiffusionOutpaintConfig fields (steps, guidance_scale)."""
    plan = plan_outpainter(spec, model_path=model_path, cache_dir=cache_dir, allow_download=allow_download)
    return load_outpainter(plan, device=device, dtype=dtype, **options)


def build_depth_completer(
    spec: str,
    *,
    model_path=None,
    cache_dir=None,
    allow_download: bool = False,
    device=None,
    dtype=None,
    **options,
):
    """`--depth` spec -> DepthCompleter. options: MonoDepthConfig / NetworkDepthConfig fields."""
    plan = plan_depth_completer(
        spec, model_path=model_path, cache_dir=cache_dir, allow_download=allow_download
    )
    return load_depth_completer(plan, device=device, dtype=dtype, **options)


def build_backends(
    outpainter: str,
    depth: str,
    *,
    model_path=None,
    cache_dir=None,
    allow_download: bool = False,
    device=None,
    dtype=None,
    outpainter_options: dict | None = None,
    depth_options: dict | None = None,
):
    """Both backends; every model is located before any is loaded (a missing one fails in milliseconds)."""
    kw = {"model_path": model_path, "cache_dir": cache_dir, "allow_download": allow_download}
    op_plan = plan_outpainter(outpainter, **kw)
    d_plan = plan_depth_completer(depth, **kw)
    return (
        load_outpainter(op_plan, device=device, dtype=dtype, **(outpainter_options or {})),
        load_depth_completer(d_plan, device=device, dtype=dtype, **(depth_options or {})),
    )


def preset_backends(preset: str) -> tuple[str, str]:
    """(outpainter spec, depth spec) of a named preset (the presets live in engine.config)."""
    from engine.config import PRESETS

    if preset not in PRESETS:
        raise StitchError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[preset].outpainter, PRESETS[preset].depth_backend


def required_models(outpainter: str, depth: str) -> list[str]:
    """Registry keys (or ids) the two specs need: what `stitch models download --preset` fetches."""
    keys: list[str] = []
    spec = OUTPAINTER_ALIASES.get(outpainter, outpainter)
    if spec != "classical":
        keys += [OUTPAINTER_ALIASES.get(s, s) for s in spec.split("+")]
    if depth == "invisible-stitch":
        keys.append("invisible-stitch")
    elif depth == "mono" or depth.startswith("mono:"):
        keys.append(depth.partition(":")[2] or DEFAULT_MONO)
    elif depth.startswith("network:"):
        keys.append(depth.partition(":")[2])
    elif depth != "classical":
        keys.append(depth)
    return [k for k in keys if k in REGISTRY or (k.count("/") == 1 and not Path(k).expanduser().exists())]


def check_preset(preset: str, *, model_path=None, cache_dir=None) -> list[BackendPlan]:
    """Locate every model a preset needs (raises ModelUnavailableError for the first missing one)."""
    outpainter, depth = preset_backends(preset)
    kw = {"model_path": model_path, "cache_dir": cache_dir}
    return [plan_outpainter(outpainter, **kw), plan_depth_completer(depth, **kw)]
