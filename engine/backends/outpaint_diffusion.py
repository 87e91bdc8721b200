"""Diffusion outpainting: a diffusers inpainting pipeline (default: SD 2 inpainting) behind `Outpainter`.

Any diffusers inpainting pipeline folder or hub id works (loaded with `AutoPipelineForInpainting`, always from
the local path `models.resolve` found). The known region is kept exact: the result is pasted back
outside the mask with a feathered seam on the filled side; with an asymmetric VAE (the release's
`cross-attention/asymmetric-autoencoder-kl-x-2`) the decoder also sees the known pixels: a sharper seam.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from engine.backends.models import ResolvedModel
from engine.backends.outpaint import paste_known
from engine.device import dtype_kwargs, resolve_device
from splat.errors import StitchError

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "pndm": "PNDMScheduler",
}


@dataclass(frozen=True)
class DiffusionOutpaintConfig:
    steps: int = 50  # the release used the pipeline default (50)
    guidance_scale: float = 7.5
    negative_prompt: str = ""
    strength: float = 1.0  # 1.0: the masked region starts from pure noise
    feather_px: int = 0  # >0: blend into the input inside the mask near the seam (needs real pixels there)
    scheduler: str | None = None  # None: the model's own; or one of SCHEDULERS (dpm: good at ~20-25 steps)
    attention_slicing: bool = False  # lower peak memory on small GPUs, a little slower
    cpu_offload: bool = False  # model CPU offload (needs `accelerate`): fits ~4 GB GPUs
    progress: bool = False  # diffusers' per-step progress bar

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise StitchError(f"outpainting steps must be >= 1, got {self.steps}")
        if not 0.0 < self.strength <= 1.0:
            raise StitchError(f"outpainting strength must be in (0, 1], got {self.strength}")
        if self.scheduler is not None and self.scheduler not in SCHEDULERS:
            raise StitchError(f"unknown scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")


def default_device() -> torch.device:
    return resolve_device("auto")


def default_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA (as the release), fp32 on CPU (fp16 CPU kernels are slow or missing)."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def _pad_to_multiple(a: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad bottom/right so both sides are multiples of `multiple` -> (padded, (H, W) original)."""
    h, w = a.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return a, (h, w)
    border = cv2.BORDER_REFLECT_101 if min(h, w) > max(ph, pw) else cv2.BORDER_REPLICATE
    padded = cv2.copyMakeBorder(a, 0, ph, 0, pw, border)
    return padded, (h, w)


class DiffusionOutpainter:
    """`Outpainter` on a diffusers inpainting pipeline. Build with `from_pretrained` or the registry."""

    name = "diffusion"
    needs_prompt = True  # text-conditioned: without a prompt the new content is generic

    def __init__(
        self,
        pipe,
        config: DiffusionOutpaintConfig | None = None,
        model: ResolvedModel | None = None,
        vae_model: ResolvedModel | None = None,
    ) -> None:
        self.pipe = pipe
        self.config = config or DiffusionOutpaintConfig()
        self.model = model
        self.vae_model = vae_model
        # Pipelines check sides % 8; the VAE needs multiples of its own downsampling factor.
        self.multiple = int(np.lcm(8, int(getattr(pipe, "vae_scale_factor", 8))))

    @classmethod
    def from_pretrained(
        cls,
        model: ResolvedModel | str | Path,
        *,
        vae: ResolvedModel | str | Path | None = None,
        config: DiffusionOutpaintConfig | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> DiffusionOutpainter:
        """Load from a local folder (a ResolvedModel from engine.backends.models.resolve, or a path)."""
        from diffusers import AsymmetricAutoencoderKL, AutoencoderKL, AutoPipelineForInpainting

        config = config or DiffusionOutpaintConfig()
        resolved = (
            model if isinstance(model, ResolvedModel) else ResolvedModel(str(model), Path(model), "local")
        )
        device = torch.device(device) if device is not None else default_device()
        dtype = dtype or default_dtype(device)
        try:
            pipe = AutoPipelineForInpainting.from_pretrained(
                str(resolved.path), **dtype_kwargs("diffusers", dtype)
            )
        except (OSError, ValueError, KeyError) as exc:
            raise StitchError(
                f"{resolved.path} is not a diffusers inpainting pipeline ({exc.__class__.__name__}: "
                f"{str(exc).splitlines()[0][:120]}); give a folder with model_index.json"
            ) from exc
        vae_resolved = None
        if vae is not None:
            vae_resolved = (
                vae if isinstance(vae, ResolvedModel) else ResolvedModel(str(vae), Path(vae), "local")
            )
            import json

            cfg = json.loads((vae_resolved.path / "config.json").read_text(encoding="utf-8"))
            vae_cls = (
                AsymmetricAutoencoderKL
                if cfg.get("_class_name") == "AsymmetricAutoencoderKL"
                else AutoencoderKL
            )
            pipe.vae = vae_cls.from_pretrained(str(vae_resolved.path), **dtype_kwargs("diffusers", dtype))
        if config.scheduler is not None:
            import diffusers

            sched_cls = getattr(diffusers, SCHEDULERS[config.scheduler])
            pipe.scheduler = sched_cls.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=not config.progress)
        if config.attention_slicing:
            pipe.enable_attention_slicing()
        if config.cpu_offload and device.type == "cuda":
            try:
                import accelerate  # noqa: F401
            except ImportError as exc:
                raise StitchError(
                    "--cpu-offload needs the `accelerate` package; pip install accelerate"
                ) from exc
            pipe.enable_model_cpu_offload()
        else:
            pipe = pipe.to(device)
        return cls(pipe, config, resolved, vae_resolved)

    def describe(self) -> dict:
        pipe = self.pipe
        return {
            "backend": "diffusion",
            "pipeline": type(pipe).__name__,
            "model": self.model.to_manifest() if self.model else None,
            "model_id": (self.model.repo_id or str(self.model.path)) if self.model else None,
            "revision": (self.model.commit or self.model.revision) if self.model else None,
            "vae": self.vae_model.to_manifest() if self.vae_model else None,
            "vae_class": type(pipe.vae).__name__,
            "scheduler_class": type(pipe.scheduler).__name__,
            "dtype": str(pipe.unet.dtype if hasattr(pipe, "unet") else pipe.dtype).replace("torch.", ""),
            "device": str(pipe.device),
            **asdict(self.config),
        }

    @torch.no_grad()
    def __call__(self, image: np.ndarray, mask: np.ndarray, prompt: str, seed: int) -> np.ndarray:
        """image [H, W, 3] float in [0, 1], mask [H, W] bool (True = fill) -> [H, W, 3] float32."""
        from PIL import Image

        if image.ndim != 3 or image.shape[2] != 3:
            raise StitchError(f"outpainter image must be [H, W, 3], got {image.shape}")
        if mask.shape != image.shape[:2]:
            raise StitchError(f"outpainter mask must be [H, W] = {image.shape[:2]}, got {mask.shape}")
        image = np.clip(image.astype(np.float32), 0.0, 1.0)
        mask = mask.astype(bool)
        if not mask.any():
            return image
        # The pipeline needs sides divisible by 8 (the VAE's downsampling): reflect-pad, run, crop.
        img_p, (h, w) = _pad_to_multiple(image, self.multiple)
        mask_p, _ = _pad_to_multiple(mask.astype(np.uint8), self.multiple)
        hp, wp = img_p.shape[:2]
        pil_image = Image.fromarray((img_p * 255.0 + 0.5).astype(np.uint8))
        pil_mask = Image.fromarray(mask_p.astype(np.uint8) * 255, mode="L")
        # A CPU generator gives the same noise on every device: same seed, same picture.
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        cfg = self.config
        out = self.pipe(
            prompt=prompt,
            image=pil_image,
            mask_image=pil_mask,
            height=hp,
            width=wp,
            num_inference_steps=cfg.steps,
            guidance_scale=cfg.guidance_scale,
            negative_prompt=cfg.negative_prompt or None,
            strength=cfg.strength,
            generator=generator,
            output_type="np",
        ).images[0]  # [hp, wp, 3] float in [0, 1]
        filled = np.asarray(out, dtype=np.float32)[:h, :w]
        return paste_known(np.clip(filled, 0.0, 1.0), image, mask, feather_px=cfg.feather_px)
