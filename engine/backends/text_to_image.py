"""Text-only start: `stitch generate --prompt "..."` without a photo paints the first view with a diffusers
text-to-image pipeline (`AutoPipelineForText2Image`), then the run stitches as from a photo.

The weights are located before any work (`plan_text_to_image`: `--model-path`, the HF cache; never a
download), so a machine without them stops with one line saying what to download or to pass a photo. The
image is generated at the model's native resolution in 4:3 landscape (the first view's camera: focal =
width) with a seeded CPU generator (same seed and prompt, same picture on every device), then resized to
`--max-side` like a photo. It is saved as the run's `input.png`; the manifest records the model, revision,
steps, guidance and size under `first_view`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.backends.model_registry import lookup
from engine.backends.models import ResolvedModel, resolve
from splat.errors import ModelUnavailableError, StitchError

DEFAULT_T2I = "sd21-base"
ASPECT = 4 / 3  # landscape, as the example photos and the generation cameras' 53-degree horizontal FOV


@dataclass(frozen=True)
class TextToImagePlan:
    """A text-to-image model located on disk (not loaded yet) and the first view's size."""

    model: ResolvedModel
    spec: str
    steps: int
    guidance_scale: float
    size: tuple[int, int]  # (width, height) of the first view after resizing to --max-side

    def describe(self) -> dict:
        return {
            "source": "text-to-image",
            "spec": self.spec,
            "model": self.model.to_manifest(),
            "model_id": self.model.repo_id or str(self.model.path),
            "revision": self.model.commit or self.model.revision,
            "steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "size": list(self.size),
        }


def first_view_size(max_side: int) -> tuple[int, int]:
    """(width, height) of a generated first view: 4:3, long side max_side, both multiples of 8."""
    w = max(32, max_side // 8 * 8)
    return w, max(32, round(w / ASPECT / 8) * 8)


def plan_text_to_image(
    spec: str = DEFAULT_T2I, *, model_path=None, steps: int = 0, max_side: int = 384, guidance: float = 7.5
) -> TextToImagePlan:
    """Locate the model (one line, before any work, when it is missing) -> plan."""
    spec = (spec or DEFAULT_T2I).strip()
    if steps < 0:
        raise StitchError(f"--t2i-steps must be >= 1 (0: the default 30), got {steps}")
    try:
        model = resolve(spec, kind="diffusers-pipeline", model_path=model_path)
    except ModelUnavailableError as exc:
        known = lookup(spec)
        key = known.key if known is not None else spec  # `stitch models download` takes hub ids too
        raise ModelUnavailableError(
            f"no photo given, and the text-to-image model {spec!r} that would paint the first view is not "
            f"on this machine ({_reason(exc)}): run `stitch models download {key}` on a connected machine "
            "or pass --model-path DIR, or give a photo: stitch generate PHOTO --prompt ..."
        ) from None
    return TextToImagePlan(model, spec, steps or 30, guidance, first_view_size(max_side))


def _reason(exc: Exception) -> str:
    """The '(why)' of engine.backends.models.unavailable_message: not found where, or HF_HUB_OFFLINE."""
    import re

    found = re.search(r"not available on this machine \((.*)\): run", str(exc))
    return found.group(1) if found else "weights not found"


def generate_first_view(
    plan: TextToImagePlan, prompt: str, seed: int, device: str | None = None, quiet: bool = True
) -> np.ndarray:
    """Paint the first view -> float32 [H, W, 3] in [0, 1] at plan.size."""
    import torch
    from PIL import Image

    from engine.backends.models import model_load_errors
    from engine.backends.outpaint_diffusion import default_device, default_dtype

    if not prompt.strip():
        raise StitchError("a text-only start needs a prompt: --prompt TEXT (or give a photo)")
    dev = torch.device(device) if device is not None else default_device()
    with model_load_errors("text-to-image", [plan.model]):
        from diffusers import AutoPipelineForText2Image

        try:
            pipe = AutoPipelineForText2Image.from_pretrained(str(plan.model.path), dtype=default_dtype(dev))
        except (OSError, ValueError, KeyError) as exc:
            raise StitchError(
                f"{plan.model.path} is not a diffusers text-to-image pipeline ({exc.__class__.__name__}); "
                "give a folder with model_index.json"
            ) from exc
    pipe = pipe.to(dev)
    pipe.set_progress_bar_config(disable=quiet)
    # The model's native size (unet sample size x VAE factor), as a 4:3 landscape, multiple of 8.
    native = int(pipe.unet.config.sample_size) * int(getattr(pipe, "vae_scale_factor", 8))
    width, height = native, max(8, round(native / ASPECT / 8) * 8)
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    with torch.no_grad():
        out = pipe(
            prompt=prompt,
            width=width,
            height=height,
            num_inference_steps=plan.steps,
            guidance_scale=plan.guidance_scale,
            generator=generator,
            output_type="np",
        ).images[0]
    img = Image.fromarray((np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8))
    img = img.resize(
        plan.size, Image.Resampling.LANCZOS if plan.size[0] < width else Image.Resampling.BICUBIC
    )
    return np.asarray(img, dtype=np.float32) / 255.0
