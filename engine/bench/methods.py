"""The geometry benchmark's methods: a registry of named depth completers, built on demand.

Built in: the classical default and its baselines, plus the learned backends through the backend registry
("invisible-stitch": the paper's completion network; "mono": a transformers monocular model + robust global
scale & shift, i.e. the paper's "ZoeDepth + scale & shift" baseline). Any `--depth` spec works as a method
named `depth:SPEC` (e.g. `depth:mono:DIR`, `depth:./model`). Modules listed in `PLUGIN_MODULES` may add
methods by defining `geometry_bench_methods() -> dict[str, Callable[[], DepthCompleter]]`. A factory that
raises StitchError (e.g. ModelUnavailableError: no weights on this machine) or ImportError is skipped with a
note when the method list is the default, and is an error when the user named it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from engine.backends.depth import DepthCompleter
from splat.errors import StitchError

PLUGIN_MODULES = ("engine.backends.depth_mono", "engine.backends.depth_network")

MethodFactory = Callable[[], DepthCompleter]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    factory: MethodFactory
    description: str = ""


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(name: str, factory: MethodFactory, description: str = "") -> None:
    """Add (or replace) a benchmark method: `factory()` builds a DepthCompleter."""
    if not name or "," in name or "/" in name:
        raise StitchError(f"method name {name!r} must be non-empty without ',' or '/'")
    _REGISTRY[name] = MethodSpec(name, factory, description)


def _learned(spec: str) -> MethodFactory:
    def factory() -> DepthCompleter:
        from engine.backends.registry import build_depth_completer

        return build_depth_completer(spec)

    return factory


def _register_builtin() -> None:
    from engine.backends.depth_baselines import InterpolationCompleter, ScaleShiftAligned, ZeroKnownMonocular
    from engine.backends.depth_classical import ClassicalDepthCompleter, NearestFillCompleter

    register_method("classical", ClassicalDepthCompleter, "classical completion (offline default)")
    register_method("nearest", NearestFillCompleter, "nearest known pixel (propagation)")
    register_method("interpolation", InterpolationCompleter, "LucidDreamer-style linear interpolation")
    register_method(
        "prior",
        lambda: ZeroKnownMonocular(ClassicalDepthCompleter()),
        "scene prior, no known depth (monocular)",
    )
    register_method(
        "prior+align",
        lambda: ScaleShiftAligned(ZeroKnownMonocular(ClassicalDepthCompleter()), space="inverse"),
        "scene prior + robust global scale & shift on the known depth",
    )
    register_method(
        "invisible-stitch", _learned("invisible-stitch"), "the paper's completion network (weights)"
    )
    register_method("mono", _learned("mono"), "monocular model + robust global scale & shift (weights)")


def available_methods() -> dict[str, MethodSpec]:
    """Built-in methods plus those of importable plugin modules (in registration order)."""
    if not _REGISTRY:
        _register_builtin()
    specs = dict(_REGISTRY)
    for module_name in PLUGIN_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        hook = getattr(module, "geometry_bench_methods", None)
        if callable(hook):
            for name, factory in hook().items():
                specs.setdefault(name, MethodSpec(name, factory, f"from {module_name}"))
    return specs


def build_methods(
    names: Sequence[str] | None, log: Callable[[str], None] = print
) -> dict[str, DepthCompleter]:
    """Instantiate the named methods (all available if None); unavailable ones are skipped with a note."""
    specs = available_methods()
    if names:
        for n in names:
            if n.startswith("depth:") and len(n) > len("depth:"):
                specs[n] = MethodSpec(n, _learned(n[len("depth:") :]), "a --depth spec")
        unknown = [n for n in names if n not in specs]
        if unknown:
            raise StitchError(
                f"unknown method(s) {', '.join(unknown)}; available: {', '.join(specs)} or depth:SPEC"
            )
        specs = {n: specs[n] for n in names}
    methods: dict[str, DepthCompleter] = {}
    for name, spec in specs.items():
        try:
            methods[name] = spec.factory()
        except (StitchError, ImportError) as exc:
            if names:
                why = _bench_hint(str(exc))
                raise StitchError(f"benchmark method {name} is not available: {why}") from exc
            log(f"skipping method {name}: {_bench_hint(str(exc).splitlines()[0])}")
    if not methods:
        raise StitchError("no benchmark method could be built; see the notes above")
    return methods


def _bench_hint(message: str) -> str:
    """Model errors end with generate's fallback (--preset offline), which bench does not have."""
    return message.replace(
        "without weights use --preset offline (classical backends)",
        "or leave the method out (classical, nearest, interpolation, prior, prior+align need no weights)",
    )
