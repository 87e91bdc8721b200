"""The stitching loop: grow a Gaussian scene view by view.

For each camera after the first:
    1. render the existing Gaussians -> colour, depth, alpha
    2. masks: covered (alpha, eroded) and to-inpaint (holes, dilated)
    3. outpaint the holes (known pixels kept exact)
    4. complete depth for the view, conditioned on the rendered depth of the covered pixels
    5. remove depth-edge "noodles"
    6. unproject the newly covered pixels and add them as Gaussians
    7. optimise the Gaussians against the views so far
    8. save the view and a checkpoint; tell subscribers
Everything comes in through the constructor, so tests pass stand-ins and users pass real models.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.backends.depth import DepthCompleter, complete_in_view
from engine.backends.outpaint import Outpainter, paste_known
from engine.config import FusionConfig, OptimConfig
from engine.events import EventCallback, PipelineEvent
from engine.fusion import coverage_masks, remove_depth_noodles
from engine.images import to_uint8
from engine.rundir import RunDirectory
from splat.cameras import Camera, unproject_depth
from splat.errors import StitchError
from splat.gaussians import Gaussians
from splat.learning_rates import LearningRates
from splat.optimize import optimize
from splat.train_views import TrainView
from splat.view_culling import visible_in

BACKGROUND = (0.0, 0.0, 0.0)


@dataclass
class ViewRecord:
    """What one stitched view produced (kept in memory for optimisation of later views)."""

    camera: Camera
    image: np.ndarray  # [H, W, 3] float32
    depth: np.ndarray  # [H, W] float32 metres
    new_mask: np.ndarray  # [H, W] bool, pixels that seeded Gaussians
    inpaint_mask: np.ndarray | None = None  # [H, W] bool


@dataclass
class PipelineOutput:
    gaussians: Gaussians
    views: list[ViewRecord]
    timings: list[dict] = field(default_factory=list)  # seconds per step name, one dict per view
    resumed_from: int = 0


class StitchPipeline:
    def __init__(
        self,
        outpainter: Outpainter,
        depth_completer: DepthCompleter,
        fusion: FusionConfig | None = None,
        optim: OptimConfig | None = None,
        sh_degree: int = 3,
        device: str | torch.device = "cpu",
    ) -> None:
        self.outpainter = outpainter
        self.depth_completer = depth_completer
        self.fusion = fusion or FusionConfig()
        self.optim = optim or OptimConfig()
        self.sh_degree = sh_degree
        self.device = torch.device(device)
        self._photo: np.ndarray | None = None  # the run's photo [H, W, 3], set per call

    # --- 0. inputs ----------------------------------------------------------------------------------
    @staticmethod
    def check_inputs(image: np.ndarray, cameras: Sequence[Camera], first_depth: np.ndarray | None) -> None:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.float32:
            raise StitchError(f"image must be float32 [H, W, 3], got {image.dtype} {image.shape}")
        if not cameras:
            raise StitchError("no cameras to generate; give a mode or a camera path with at least one camera")
        h, w = image.shape[:2]
        for i, cam in enumerate(cameras):
            if (cam.height, cam.width) != (h, w):
                raise StitchError(f"camera {i} is {cam.width}x{cam.height} but the image is {w}x{h}")
        if first_depth is not None and (first_depth.shape != (h, w) or not np.isfinite(first_depth).all()):
            raise StitchError(f"first-view depth must be finite [H, W] = {(h, w)}, got {first_depth.shape}")

    # --- the loop -----------------------------------------------------------------------------------
    def __call__(
        self,
        image: np.ndarray,  # [H, W, 3] float32 in [0, 1]
        cameras: Sequence[Camera],
        *,
        prompt: str = "",
        seed: int = 0,
        first_depth: np.ndarray | None = None,  # [H, W] metres; replaces the completer for view 0
        run_dir: RunDirectory | None = None,
        callbacks: Sequence[EventCallback] = (),
        resume: bool = False,
    ) -> PipelineOutput:
        self.check_inputs(image, cameras, first_depth)
        self._photo = image
        cameras = list(cameras)
        emit = _Emitter(callbacks, cameras)
        gaussians = Gaussians.empty(self.sh_degree, self.device)
        views: list[ViewRecord] = []
        start = 0
        timings: list[dict] = []
        if resume and run_dir is not None:
            start, tensors, state = run_dir.load_checkpoint()
            timings = list(state.get("timings", []))[:start]
            if tensors is not None:
                gaussians = Gaussians({k: v.to(self.device) for k, v in tensors.items()})
                for k in range(start):
                    img_k, depth_k, new_k = run_dir.load_view(k)
                    views.append(ViewRecord(cameras[k], img_k, depth_k, new_k))
        emit("run_started", start - 1, message=f"{len(cameras)} views, starting at view {start}")
        for k in range(start, len(cameras)):
            emit("view_started", k)
            t = _Timer()
            if k == 0:
                record = self._first_view(image, cameras[0], first_depth, t)
            else:
                record = self._next_view(gaussians, cameras[k], prompt, seed + k, t)
            with t("seed"):
                new_gaussians = self._seed_gaussians(record, budget_left=self._budget_left(len(gaussians)))
                gaussians.extend(new_gaussians)
            views.append(record)
            emit("view_added", k, image=to_uint8(record.image))
            with t("optimize"):
                self._optimize(
                    gaussians, views, n_new=len(new_gaussians), seed=seed * 1000 + k, emit=emit, k=k
                )
            t.record["n_gaussians"] = len(gaussians)
            t.record["n_new"] = len(new_gaussians)
            timings.append(t.record)
            if run_dir is not None:
                with t("save"):
                    run_dir.save_view(k, record.image, record.depth, record.new_mask, _or_empty(record))
                    run_dir.save_checkpoint(k + 1, gaussians.tensors(), {"timings": timings})
            emit(
                "view_finished",
                k,
                image=to_uint8(record.image),
                gaussians=gaussians.tensors(),
                message=t.summary(),
            )
        if self.optim.final_steps > 0 and views:
            # One optimisation over all views after the last one (the release's only optimisation).
            t0 = time.perf_counter()
            last = len(cameras) - 1
            self._optimize(gaussians, views, 0, seed * 1000 + len(cameras), emit, last, final=True)
            if timings:
                timings[-1]["final_optimize"] = round(time.perf_counter() - t0, 4)
        emit("run_finished", len(cameras) - 1, gaussians=gaussians.tensors())
        return PipelineOutput(gaussians, views, timings, resumed_from=start)

    # --- steps --------------------------------------------------------------------------------------
    def _first_view(self, image: np.ndarray, camera: Camera, first_depth: np.ndarray | None, t) -> ViewRecord:
        h, w = image.shape[:2]
        with t("depth"):
            if first_depth is None:
                # The completer with nothing known: its monocular mode (or the scene prior).
                depth = self.depth_completer(image, np.zeros((h, w), np.float32), np.zeros((h, w), bool))
            else:
                depth = first_depth.astype(np.float32)
        with t("noodles"):
            depth = self._clean_depth(depth)
        return ViewRecord(camera, image, depth, np.ones((h, w), bool), np.zeros((h, w), bool))

    def _next_view(self, gaussians: Gaussians, camera: Camera, prompt: str, seed: int, t) -> ViewRecord:
        from splat.render import render_camera

        with t("render"), torch.no_grad():
            out = render_camera(gaussians, camera, background=self._background())
            rgb = out.rgb[0].clamp(0, 1).cpu().numpy().astype(np.float32)
            depth_r = out.depth[0, ..., 0].cpu().numpy().astype(np.float32)
            alpha = out.alpha[0, ..., 0].cpu().numpy().astype(np.float32)
        with t("masks"):
            covered, inpaint = coverage_masks(
                alpha, self.fusion.erode_px, self.fusion.dilate_px, self.fusion.coverage_threshold
            )
            covered &= depth_r > 0
            inpaint |= ~covered  # every pixel that seeds new Gaussians gets outpainted colour
        with t("outpaint"):
            # The render is premultiplied over a black background: a covered pixel with alpha 0.98 is 2 %
            # darker than its surface. Un-premultiplied, the known colour is the surface's own; otherwise each
            # view of a 360 chain inherits and repeats the loss (0.98 -> 0.82 of the photo over 12 views).
            surface = np.clip(rgb / np.maximum(alpha, 1e-3)[..., None], 0.0, 1.0)
            known_rgb = np.where(inpaint[..., None], 0.0, surface).astype(np.float32)
            # Exemplar outpainters also copy from the photo: sharp and correctly exposed, where the view's
            # known pixels are renders (of renders, late in a 360 chain).
            ref = {"reference": self._photo} if getattr(self.outpainter, "uses_reference", False) else {}
            filled = self.outpainter(known_rgb, inpaint, prompt, seed, **ref)
            filled = paste_known(np.asarray(filled, np.float32), known_rgb, inpaint)
        with t("depth"):
            known_depth = np.where(covered, depth_r, 0.0).astype(np.float32)
            depth = complete_in_view(self.depth_completer, filled, known_depth, covered, camera.K)
            _check_depth(depth, covered.shape)
        with t("noodles"):
            depth = self._clean_depth(depth)
        return ViewRecord(camera, filled, depth, ~covered, inpaint)

    def _clean_depth(self, depth: np.ndarray) -> np.ndarray:
        _check_depth(depth, depth.shape)
        clean, _ = remove_depth_noodles(
            depth, threshold=self.fusion.noodle_threshold, fill=self.fusion.noodle_fill
        )
        return clean.astype(np.float32)

    def _budget_left(self, n_now: int) -> int | None:
        limit = self.fusion.max_gaussians
        return None if limit <= 0 else max(0, limit - n_now)

    def _seed_gaussians(self, record: ViewRecord, budget_left: int | None = None) -> Gaussians:
        """Unproject the view's new pixels (every `points_stride`-th) into Gaussians.

        Under a Gaussian budget the stride grows for this view until its new pixels fit; the neighbour-based
        sizes then make each Gaussian cover its s x s block, so the view stays hole-free, only coarser."""
        mask = record.new_mask.copy()
        s = self.fusion.points_stride
        if budget_left is not None:
            while s < 64 and int(mask[s // 2 :: s, s // 2 :: s].sum()) > budget_left:
                s += 1
        if s > 1:
            grid = np.zeros_like(mask)
            grid[s // 2 :: s, s // 2 :: s] = True
            mask &= grid
        points = unproject_depth(record.camera, record.depth, mask)
        colors = record.image[mask]
        if len(points) == 0:
            return Gaussians.empty(self.sh_degree, self.device)
        return Gaussians.from_points(
            points,
            colors,
            sh_degree=self.sh_degree,
            opacity=self.fusion.first_opacity,
            scale_factor=self.fusion.scale_factor,
            scale_rule=self.fusion.scale_rule,
            device=self.device,
        )

    def _optimize(
        self,
        gaussians: Gaussians,
        views: list[ViewRecord],
        n_new: int,
        seed: int,
        emit,
        k: int,
        final: bool = False,
    ) -> None:
        cfg = self.optim
        steps = cfg.final_steps if final else cfg.steps_per_view
        if steps <= 0:
            return
        # Each view teaches only the pixels it added: the rest of a later view is a render of the earlier
        # (blurrier) scene, and fitting it again would pull the scene towards its own blur. trust="all" (the
        # release) trains on full images.
        train_views = [
            TrainView(
                v.camera,
                torch.from_numpy(v.image).to(self.device),
                None if cfg.trust == "all" else torch.from_numpy(v.new_mask).to(self.device),
            )
            for v in views
        ]
        trainable = None
        weights = None
        if not final and cfg.only_new_and_visible and len(views) > 1:
            # Flat cost per view: only Gaussians the new view sees (and the new ones) change, and half the
            # steps look at the new view, the rest at the earlier views.
            n = len(gaussians)
            trainable = visible_in(views[-1].camera, gaussians.means.detach())
            trainable[n - n_new :] = True
            weights = [0.5 / (len(views) - 1)] * (len(views) - 1) + [0.5]
        lrs = LearningRates(
            cfg.lr_means, cfg.lr_scales, cfg.lr_quats, cfg.lr_opacities, cfg.lr_sh0, cfg.lr_shN
        )

        def on_step(step: int, loss: float) -> None:
            emit("optimize_step", k, step=step + 1, total_steps=steps, loss=loss)

        with _torch_threads(1 if self.device.type == "cpu" else None):
            optimize(
                gaussians,
                train_views,
                steps,
                lrs=lrs,
                ssim_weight=cfg.ssim_weight,
                resolution_scale=cfg.resolution_scale,
                trainable=trainable,
                view_weights=weights,
                seed=seed,
                background=self._background(),
                on_step=on_step,
                pose_refine=final and cfg.pose_refine,
                min_sigma_px=cfg.min_sigma_px,
            )

    def _background(self) -> torch.Tensor:
        return torch.tensor(BACKGROUND, device=self.device)


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Run torch ops on n threads inside the block. On CPU the rasterizer's numba kernels own the cores;
    torch's OpenMP pool spinning beside them made optimisation steps 3x slower on a busy 2-core machine."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_depth(depth: np.ndarray, shape: tuple[int, ...]) -> None:
    if depth.shape != shape:
        raise StitchError(f"depth completer returned shape {depth.shape}, expected {shape}")
    if not np.isfinite(depth).all() or (depth <= 0).any():
        raise StitchError(
            "depth completer returned non-finite or non-positive depth; check the depth backend"
        )


def _or_empty(record: ViewRecord) -> np.ndarray:
    return record.inpaint_mask if record.inpaint_mask is not None else np.zeros_like(record.new_mask)


class _Timer:
    """Collects wall time per named step of one view."""

    def __init__(self) -> None:
        self.record: dict = {}

    def __call__(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.record[name] = round(timer.record.get(name, 0.0) + time.perf_counter() - self.t0, 4)

        return _Ctx()

    def summary(self) -> str:
        parts = [f"{k} {v:.2f}s" for k, v in self.record.items() if isinstance(v, float)]
        return ", ".join(parts)


class _Emitter:
    """Sends events to subscribers; a subscriber that raises is reported once and never stops the run."""

    def __init__(self, callbacks: Sequence[EventCallback], cameras: list[Camera]) -> None:
        self.callbacks = list(callbacks)
        self.cameras = cameras
        self.failed: set[int] = set()

    def __call__(self, kind: str, view_index: int, **kw) -> None:
        event = PipelineEvent(
            kind=kind, view_index=view_index, total_views=len(self.cameras), cameras=self.cameras, **kw
        )
        for i, cb in enumerate(self.callbacks):
            if i in self.failed:
                continue
            try:
                cb(event)
            except Exception as exc:  # a broken viewer or logger must not end the generation
                self.failed.add(i)
                warnings.warn(f"event subscriber {cb!r} failed and was detached: {exc}", stacklevel=2)
