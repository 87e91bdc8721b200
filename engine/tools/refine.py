"""`stitch refine`: re-optimise a finished run's Gaussians against its views, resumably, with a report.

Reads RUN_DIR (manifest cameras, views/view_XXX.png, depth_XXX.npy, new_XXX.png, checkpoint/), writes
    RUN_DIR/refine/state.json + trainer.safetensors   resumable refinement state (every `checkpoint_every`)
    RUN_DIR/refined.ply                               the refined scene
    RUN_DIR/quality.json                              PSNR/SSIM before and after (engine.tools.quality_report)
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine.rundir import atomic_write_json
from engine.tools.quality_report import quality
from engine.tools.refine_checkpoint import RefineCheckpoint
from engine.tools.refine_inputs import load_run, references, train_views
from splat import render as splat_render
from splat.errors import StitchError
from splat.gaussians import Gaussians
from splat.learning_rates import LearningRates, Schedule
from splat.optimize import Trainer
from splat.regularize import Regularization
from splat.strategy import make_strategy, strategy_counts
from splat.train_views import TrainView

REFINE_VERSION = 1
TRUST_MODES = ("new", "all")


@dataclass(frozen=True)
class RefineConfig:
    steps: int = 1000
    strategy: str = "auto"  # auto: "cpu" on CPU, gsplat "default" on CUDA; or none, cpu, default, mcmc
    budget: int | None = None  # most Gaussians (None: 1.25x the start on CPU, 2x on CUDA)
    ssim_weight: float = 0.2  # loss = 0.8 L1 + 0.2 D-SSIM (PAPER-NOTES)
    depth_weight: float = 0.05  # log-depth L1 against the completed depth maps
    scale_ratio_weight: float = 0.01  # needle penalty (largest / smallest axis above max_scale_ratio)
    max_scale_ratio: float = 10.0
    opacity_weight: float = 0.0  # mean-opacity penalty (floaters); MCMC wants ~0.01
    pose_refine: bool = False  # learn a small se(3) correction per view (the photo's view stays fixed)
    trust: str = "new"  # pixels the loss uses: "new" (each view's own content) or "all"
    resolution_scale: float = 1.0
    means_final_ratio: float = 0.01  # means lr decays exponentially to this fraction
    sh_degree_interval: int | None = None  # SH degree +1 every this many steps (None: steps // 4)
    lrs: LearningRates = field(
        default_factory=lambda: LearningRates(
            means=1.6e-4, scales=5e-3, quats=1e-3, opacities=5e-2, sh0=1e-2, shN=5e-4, pose=1e-4
        )
    )
    checkpoint_every: int = 100
    seed: int = 0
    device: str = "auto"  # auto: cuda when available

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RefineConfig:
        d = dict(d)
        d["lrs"] = LearningRates(**d.get("lrs", {}))
        return cls(**d)

    def check(self) -> None:
        if self.steps < 1:
            raise StitchError(f"--steps must be at least 1, got {self.steps}")
        if self.trust not in TRUST_MODES:
            raise StitchError(f"unknown trust mode {self.trust!r}; choose one of {', '.join(TRUST_MODES)}")
        if not 0 < self.resolution_scale <= 1:
            raise StitchError(f"resolution scale must be in (0, 1], got {self.resolution_scale}")
        if self.checkpoint_every < 1:
            raise StitchError(f"--checkpoint-every must be at least 1, got {self.checkpoint_every}")
        if self.budget is not None and self.budget < 1:
            raise StitchError(f"--budget must be a positive Gaussian count, got {self.budget}")
        for name in ("depth_weight", "ssim_weight", "scale_ratio_weight", "opacity_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                flag = "--depth-weight" if name == "depth_weight" else name
                raise StitchError(f"{flag} must be a finite number >= 0, got {value}")
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)):
            raise StitchError(f"unknown --device {self.device!r}; choose auto, cpu, cuda or cuda:N")


@contextlib.contextmanager
def _whole_step() -> Iterator[None]:
    """Defer SIGINT until the block ends, then raise KeyboardInterrupt: a step interrupted half-way (some
    parameters updated, the step counter not) was saved and resumed to another refined.ply."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _device(name: str) -> torch.device:
    from engine.device import check_gsplat, resolve_device

    device = resolve_device(name)  # cuda:1 stays cuda:1
    check_gsplat(device)
    return device


def _build_trainer(
    config: RefineConfig, gaussians: Gaussians, views: list[TrainView], device: torch.device
) -> Trainer:
    name = config.strategy
    if name == "auto":
        name = "default" if splat_render.uses_gsplat(device) else "cpu"
    strategy = make_strategy(
        name,
        device=device,
        steps=config.steps,
        budget=config.budget,
        n_initial=len(gaussians),
        seed=config.seed,
    )
    interval = config.sh_degree_interval or max(1, config.steps // 4)
    return Trainer(
        gaussians,
        views,
        config.steps,
        lrs=config.lrs,
        ssim_weight=config.ssim_weight,
        resolution_scale=config.resolution_scale,
        seed=config.seed,
        background=torch.zeros(3, device=device),  # as the generation loop renders
        strategy=strategy,
        schedule=Schedule(config.means_final_ratio, interval),
        regularization=Regularization(
            depth_weight=config.depth_weight,
            scale_ratio_weight=config.scale_ratio_weight,
            max_scale_ratio=config.max_scale_ratio,
            opacity_weight=config.opacity_weight,
        ),
        pose_refine=config.pose_refine,
    )


@dataclass
class RefineResult:
    gaussians: Gaussians
    report: dict
    resumed_from: int
    ply: Path
    report_path: Path


def refine_run(
    root: Path,
    config: RefineConfig,
    *,
    restart: bool = False,
    progress: Callable[[int, int, float, int], None] | None = None,  # (step, total, loss, n_gaussians)
) -> RefineResult:
    """Refine RUN_DIR's scene for config.steps steps (continuing a saved refinement with the same config),
    then write refined.ply and quality.json. Ctrl-C saves a checkpoint before stopping."""
    from splat.formats.io import save_ply

    config.check()
    root = Path(root)
    device = _device(config.device)
    run = load_run(root, config.trust)
    ckpt = RefineCheckpoint(root)
    saved, saved_tensors = (None, None) if restart else ckpt.load()
    if restart:
        ckpt.clear()
    if saved is not None and saved.get("config") != config.to_dict():
        raise StitchError(
            f"{ckpt.dir} holds a refinement with other settings; rerun them, or pass --restart to start over"
        )
    generation, held = references(run, seed=config.seed)
    gaussians = Gaussians({k: v.to(device) for k, v in run.gaussians.items()})
    before = saved["before"] if saved is not None else quality(gaussians, generation, held)
    # gsplat's strategies draw from torch's global generators: seeded here, saved/restored in checkpoints.
    torch.manual_seed(config.seed)
    trainer = _build_trainer(config, gaussians, train_views(run, device), device)
    seconds = 0.0
    if saved is not None:
        try:
            trainer.load_state_dict(saved_tensors, saved["trainer"])
            seconds = float(saved.get("seconds", 0.0))
        except StitchError:  # says itself what to do (e.g. another strategy than the checkpoint's)
            raise
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError) as exc:
            raise StitchError(
                f"refine checkpoint in {ckpt.dir} is damaged ({type(exc).__name__}: {str(exc)[:200]}); "
                "rerun with --restart"
            ) from exc
    resumed_from = trainer.step

    def save() -> None:
        tensors, meta = trainer.state_dict()
        ckpt.save(
            {
                "version": REFINE_VERSION,
                "step": trainer.step,
                "config": config.to_dict(),
                "before": before,
                "trainer": meta,
                "seconds": round(seconds, 3),
            },
            tensors,
        )

    t0 = time.perf_counter()
    try:
        while trainer.step < config.steps:
            with _whole_step():  # Ctrl-C lands between steps: the checkpoint never holds half a step
                loss = trainer.train_step()
            if progress is not None:
                progress(trainer.step, config.steps, loss, len(gaussians))
            if trainer.step % config.checkpoint_every == 0 or trainer.step == config.steps:
                seconds += time.perf_counter() - t0
                t0 = time.perf_counter()
                save()
    except KeyboardInterrupt:
        seconds += time.perf_counter() - t0
        save()
        raise

    after = quality(gaussians, generation, held)
    report = {
        "run_dir": str(root),
        "method": {
            "generation_views": "PSNR/SSIM over each view's trusted pixels (view 0: the photo; later views: "
            f"the pixels they added); trust mode {config.trust!r}. These pixels are trained on.",
            "held_out_cameras": "cameras jittered from each generation camera (<= 3 deg, 2 % of the median "
            "depth), never trained on; reference = the view's trusted pixels reprojected with its completed "
            "depth (bilinear splat, z-buffered, cracks excluded), identical before and after.",
        },
        "before": before,
        "after": after,
        "gain_db": {
            "generation_views": _gain(before, after, "generation_views"),
            "held_out_cameras": _gain(before, after, "held_out_cameras"),
        },
        "refine": {
            "steps": config.steps,
            "resumed_from_step": resumed_from,
            "device": str(device),
            "strategy": config.strategy,
            "n_gaussians_before": before["n_gaussians"],
            "n_gaussians_after": len(gaussians),
            **strategy_counts(trainer.strategy_state),
            "seconds": round(seconds, 2),
            "steps_per_second": round(config.steps / seconds, 3) if seconds > 0 else None,
            "pose_corrections_deg_m": trainer.poses.magnitudes() if trainer.poses is not None else None,
            "config": config.to_dict(),
        },
    }
    ply = root / "refined.ply"
    save_ply(gaussians, ply)
    report_path = root / "quality.json"
    atomic_write_json(report_path, report)
    return RefineResult(gaussians, report, resumed_from, ply, report_path)


def _gain(before: dict, after: dict, key: str) -> float | None:
    b, a = before[key]["mean_psnr"], after[key]["mean_psnr"]
    return None if a is None or b is None else round(a - b, 3)


class RefineProgress:
    """Progress on stderr: an updating line (a new line every 10 % when not a terminal)."""

    def __init__(self, stream=sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.t0 = time.perf_counter()
        self.first_step: int | None = None

    def __call__(self, step: int, total: int, loss: float, n: int) -> None:
        if self.first_step is None:
            self.first_step = step - 1
        done = step - self.first_step
        rate = done / max(time.perf_counter() - self.t0, 1e-9)
        line = f"refine {step}/{total} loss {loss:.4f} {n} Gaussians {rate:.2f} steps/s"
        if self.tty:
            print(line, end="\n" if step == total else "\r", file=self.stream, flush=True)
        elif step == total or step % max(1, total // 10) == 0:
            print(line, file=self.stream, flush=True)
