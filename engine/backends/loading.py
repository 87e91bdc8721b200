"""Load the outpainter and depth completer a `GenerateConfig` names: every model located before any loads,
library chatter silenced, a damaged weight file reported in one line naming the model."""

from __future__ import annotations

import contextlib

import torch

from engine.config import GenerateConfig
from splat.errors import StitchError


def backends_for_config(
    config: GenerateConfig,
    quiet: bool = False,
    device: torch.device | None = None,
    outpainter_options: dict | None = None,
):
    """Outpainter and depth completer named by the config (learned ones through the model registry).

    quiet: no loading bars or library warnings from diffusers/transformers while the weights load.
    device: where the learned models run (None: CUDA when available); outpainter_options: e.g.
    {"cpu_offload": True, "attention_slicing": True} for the diffusion outpainter."""
    try:
        import engine.backends.registry  # noqa: F401
    except ImportError:  # registry not installed: only the classical defaults exist
        from engine.backends.depth_classical import ClassicalDepthCompleter
        from engine.backends.outpaint_classical import ClassicalOutpainter

        if config.outpainter != "classical" or config.depth_backend != "classical":
            raise StitchError(
                "learned backends are unavailable in this install; use --preset offline"
            ) from None
        return ClassicalOutpainter(), ClassicalDepthCompleter()
    # engine.backends.registry locates every model before loading any: a missing one fails in milliseconds.
    from engine.backends.models import model_load_errors
    from engine.backends.registry import (
        load_depth_completer,
        load_outpainter,
        plan_depth_completer,
        plan_outpainter,
    )

    steps = {"steps": config.outpaint_steps} if config.outpaint_steps > 0 else {}
    kw = {"model_path": config.model_path}
    op_plan = plan_outpainter(config.outpainter, **kw)
    d_plan = plan_depth_completer(config.depth_backend, **kw)
    # Damaged, truncated or mismatched weight files surface as one StitchError naming the model.
    learned = op_plan.backend not in ("classical", "mirror") or d_plan.backend != "classical"
    with _hf_libraries_silenced(quiet and learned):
        with model_load_errors("outpainter", op_plan.models):
            opts = outpainter_options if op_plan.backend == "diffusion" else {}
            outpainter = load_outpainter(op_plan, device=device, **steps, **(opts or {}))
        with model_load_errors("depth", d_plan.models):
            return outpainter, load_depth_completer(d_plan, device=device)


@contextlib.contextmanager
def _hf_libraries_silenced(silence: bool):
    """diffusers/transformers progress bars, warnings and error logs off inside (restored afterwards)."""
    if not silence:
        yield
        return
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    saved = [(m, m.get_verbosity(), m.is_progress_bar_enabled()) for m in (dlog, tlog)]
    for m, _, _ in saved:
        m.set_verbosity(50)  # CRITICAL: a failed load is reported by us, in one line
        m.disable_progress_bar()
    try:
        yield
    finally:
        for m, level, bars in saved:
            m.set_verbosity(level)
            if bars:
                m.enable_progress_bar()
