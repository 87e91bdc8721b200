"""Configuration of a generation run: frozen dataclasses, named presets, variants by `dataclasses.replace`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from engine.trajectory import MODES
from splat.errors import StitchError

RELEASE_OPACITY = 0.7310585786300049  # sigmoid(1): the release sets the opacity logits to 1 and freezes them


@dataclass(frozen=True)
class FusionConfig:
    coverage_threshold: float = 0.5  # alpha above this counts as covered by the existing scene
    erode_px: int = 2  # coverage erosion (disk radius), PAPER-NOTES
    dilate_px: int = 2  # inpainting-mask dilation (disk radius), PAPER-NOTES
    noodle_threshold: float = 12.0 / 255.0  # normalised depth-gradient threshold for "noodle" removal
    noodle_fill: str = "release"  # refill of noodle pixels: "release" (layered 8-neighbour max) | "nearest"
    points_stride: int = 1  # unproject every n-th pixel per axis (1 = one Gaussian per pixel)
    # Gaussian sigma relative to the mean distance to 3 neighbours (about 1 px of the seeding view): 0.7 as
    # optimisation's floor (splat.optimize.MIN_SIGMA_PX), below it web viewers show the background between
    # splats (benchmarks/bench_viewer_opacity.py); 1.0 blurs.
    scale_factor: float = 0.7
    scale_rule: str = "mean"  # neighbour distance for sizes: "mean" | "rms" (the release's INRIA seeding)
    first_opacity: float = 0.95
    max_gaussians: int = 0  # budget for the whole scene (0 = none); views past it are seeded more sparsely


@dataclass(frozen=True)
class OptimConfig:
    steps_per_view: int = 20  # optimisation steps after each added view (views sampled from all so far)
    final_steps: int = 0  # one optimisation over all views after the last view (the release: 990)
    trust: str = "new"  # pixels a view teaches: "new" (those it added) | "all" (full images, the release)
    pose_refine: bool = False  # per-view pose correction during the final optimisation (the release: on)
    min_sigma_px: float | None = None  # Gaussian size floor in view pixels (None: 0.7; the release: 0, none)
    resolution_scale: float = 1.0  # optimise at this fraction of the view size (CPU speed)
    ssim_weight: float = 0.2  # loss = (1 - w) * L1 + w * (1 - SSIM), PAPER-NOTES
    lr_means: float = 1.6e-4  # times the scene extent
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_opacities: float = 2.5e-2
    lr_sh0: float = 2.5e-3
    lr_shN: float = 1.25e-4
    only_new_and_visible: bool = (
        True  # keep old Gaussians the new view does not see fixed (flat cost per view)
    )


@dataclass(frozen=True)
class GenerateConfig:
    photo: Path | None = None
    prompt: str = ""
    mode: str = "stage"
    path: Path | None = None  # JSON camera path (overrides mode)
    seed: int = 0
    max_side: int = 384
    sh_degree: int = 3
    depth_file: Path | None = None  # user depth for the first view
    outpainter: str = "classical"
    outpaint_steps: int = 0  # diffusion outpainter steps (0: its default, 50 as the release)
    depth_backend: str = "classical"
    model_path: Path | None = None
    preset: str = "offline"
    text_to_image: str = (
        "sd21-base"  # no photo: the model that paints the first view (engine.backends.text_to_image)
    )
    text_to_image_steps: int = 0  # its diffusion steps (0: 30)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def to_dict(self) -> dict:
        def convert(value):
            if isinstance(value, Path):
                return str(value)
            if dataclasses.is_dataclass(value):
                return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
            return value

        return convert(self)

    @classmethod
    def from_dict(cls, d: dict) -> GenerateConfig:
        d = dict(d)
        for key in ("photo", "path", "depth_file", "model_path"):
            if d.get(key) is not None:
                d[key] = Path(d[key])
        d["fusion"] = FusionConfig(**d.get("fusion", {}))
        d["optim"] = OptimConfig(**d.get("optim", {}))
        return cls(**d)


PRESETS: dict[str, GenerateConfig] = {
    # Runs anywhere without downloads: classical outpainting and depth completion.
    "offline": GenerateConfig(),
    # The paper's backends: SD2 inpainting + the depth completion network (weights needed).
    "paper": GenerateConfig(
        outpainter="sd2",
        depth_backend="invisible-stitch",
        max_side=512,
        preset="paper",
        optim=OptimConfig(steps_per_view=100),
    ),
    # The release's own generation, for side-by-side comparison with `paper` (README: the table of
    # differences): native size (cropped to multiples of 8; longest side up to 720), SD2 + the asymmetric
    # VAE, sizes = RMS distance to 3 neighbours x 1, opacity fixed at sigmoid(1), positions frozen, no
    # per-view optimisation, one of 990 iterations over all views on full images with pose refinement.
    "release": GenerateConfig(
        outpainter="sd2-avae",
        depth_backend="invisible-stitch",
        max_side=720,
        preset="release",
        fusion=FusionConfig(scale_factor=1.0, scale_rule="rms", first_opacity=RELEASE_OPACITY),
        optim=OptimConfig(
            steps_per_view=0,
            final_steps=990,
            trust="all",
            pose_refine=True,
            only_new_and_visible=False,
            lr_means=0.0,  # the release's 1.6e-12: frozen
            lr_opacities=0.0,  # fixed at sigmoid(1), never optimised
            min_sigma_px=0.0,  # no size floor
        ),
    ),
    # A quick look: fewer optimisation steps, smaller images.
    "fast": GenerateConfig(max_side=256, preset="fast", optim=OptimConfig(steps_per_view=10)),
}


def generate_config_from_cli(
    *,
    photo: Path | None,
    prompt: str,
    mode: str,
    path: Path | None,
    seed: int,
    max_side: int,
    depth_file: Path | None,
    steps: int,
    preset: str,
    outpainter: str,
    depth_backend: str,
    model_path: Path | None,
    outpaint_steps: int = 0,
    max_gaussians: int = 0,
    text_to_image: str = "",
    text_to_image_steps: int = 0,
) -> GenerateConfig:
    """Map CLI flags onto a preset; flags left at their defaults keep the preset's values."""
    if preset not in PRESETS:
        raise StitchError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if mode not in MODES:
        raise StitchError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)} or pass --path FILE.json")
    if steps < -1:
        raise StitchError(f"--steps must be >= 0 (or -1 for the preset's), got {steps}")
    if len(prompt) > 10_000:
        raise StitchError("prompt is longer than 10000 characters; shorten it")
    if max_gaussians < 0:
        raise StitchError(f"--max-gaussians must be >= 0 (0: no budget), got {max_gaussians}")
    if depth_backend.lower().endswith((".png", ".npy")):
        # `--depth photo_depth.png` names a depth map for the photo, not a backend (issue text allows both).
        if depth_file is not None:
            raise StitchError("give the photo's depth once: either --depth FILE or --depth-file FILE")
        depth_file, depth_backend = Path(depth_backend), ""
    base = PRESETS[preset]
    fusion = (
        base.fusion if not max_gaussians else dataclasses.replace(base.fusion, max_gaussians=max_gaussians)
    )
    # --steps sets the per-view optimisation; a preset without one (release) has it set its final one.
    only_final = base.optim.steps_per_view == 0 and base.optim.final_steps > 0
    step_field = "final_steps" if only_final else "steps_per_view"
    optim = base.optim if steps == -1 else dataclasses.replace(base.optim, **{step_field: steps})
    return dataclasses.replace(
        base,
        photo=photo,
        prompt=prompt,
        mode=mode,
        path=path,
        seed=seed,
        max_side=max_side if max_side != 384 or preset == "offline" else base.max_side,
        depth_file=depth_file,
        outpainter=outpainter or base.outpainter,
        outpaint_steps=outpaint_steps or base.outpaint_steps,
        depth_backend=depth_backend or base.depth_backend,
        model_path=model_path,
        text_to_image=text_to_image or base.text_to_image,
        text_to_image_steps=text_to_image_steps or base.text_to_image_steps,
        fusion=fusion,
        optim=optim,
    )
