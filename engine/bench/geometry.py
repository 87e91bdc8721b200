"""Scene-geometry benchmark ("stitch bench geometry"): depth completion scored against real ground truth.

Protocol (Invisible Stitch, "based on ground-truth geometry"; PAPER-NOTES):
1. From an RGB-D sequence with poses take pairs (i, j = i + gap), chosen deterministically (seeded).
2. Lift frame i's ground-truth depth to 3D, seed one Gaussian per valid pixel exactly as the pipeline seeds
   new pixels (Gaussians.from_points, scale factor 0.5, opacity 0.95, colour from frame i) and render it
   into frame j with the project's renderer (splat.render.render_camera);
   covered = alpha > 0.5 eroded by a disk of radius 2, as the pipeline does (engine.fusion.coverage_masks);
   the known depth is the rendered depth on covered pixels.
3. Every method gets frame j's image and that partial depth and returns a full depth map.
4. Scores are computed on the pixels that are NOT covered and have valid ground truth in frame j:
   MAE (the paper's metric, metres), RMSE, AbsRel, delta < 1.25, and MAE in a seam band (uncovered pixels
   within `band_px` pixels of the covered region). Per-pair scores are averaged over pairs (each pair counts
   once).

Methods come from a small registry (`register_method`, `available_methods`): the classical default and its
baselines, plus the learned backends through the backend registry ("invisible-stitch": the paper's completion
network; "mono": a transformers monocular model + robust global scale & shift, i.e. the paper's "ZoeDepth +
scale & shift" baseline). Any `--depth` spec works as a method named `depth:SPEC` (e.g. `depth:mono:DIR`,
`depth:./model`). Modules listed in `PLUGIN_MODULES` may add methods by defining
`geometry_bench_methods() -> dict[str, Callable[[], DepthCompleter]]`. A factory that raises StitchError
(e.g. ModelUnavailableError: no weights on this machine) or ImportError is skipped with a note when the
method list is the default, and is an error when the user named it.

Outputs in out_dir: `pairs/<dataset>/gap<g>/<method>/<frame_i>__<frame_j>.json` (one per pair and method:
the run resumes from these), `renders/...npz` (cached partial depths), `results.csv` (every pair),
`summary.csv`, `summary.json`, `summary.md` and `figure.png` (error maps for a few pairs and MAE vs gap).
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from engine.backends.depth import DepthCompleter
from engine.bench.rgbd import RGBDFrame, RGBDSequence
from engine.fusion import coverage_masks
from splat.errors import StitchError

BENCH_VERSION = 1  # bump when the protocol changes: cached per-pair results of other versions are recomputed
PAPER_MAE = {  # PAPER-NOTES (secondary notes, indicative): MAE in metres, ScanNet / Hypersim
    "Invisible Stitch": (0.0816, 0.7295),
    "ZoeDepth + global scale & shift": (0.1293, 0.7872),
    "LucidDreamer-style interpolation": (0.1604, 0.8057),
    "CostDCNet": (0.585, 4.01),
}
METRICS = ("mae", "rmse", "absrel", "delta1", "seam_mae")
PLUGIN_MODULES = ("engine.backends.depth_mono", "engine.backends.depth_network")
MIN_EVAL_PIXELS = 50  # pairs with fewer uncovered pixels with ground truth are skipped (nothing to score)

MethodFactory = Callable[[], DepthCompleter]


# --- method registry ------------------------------------------------------------------------------


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


# --- pairs ----------------------------------------------------------------------------------------


def frame_step(seq: RGBDSequence) -> int:
    """Median difference of the frames' numeric ids (1 for consecutive frames, 2 for every 2nd frame)."""
    ids = []
    for f in seq.frames:
        digits = "".join(ch if ch.isdigit() else " " for ch in f.name).split()
        ids.append(int(digits[-1]) if digits else len(ids))
    diffs = np.diff(ids)
    diffs = diffs[diffs > 0]
    return int(np.median(diffs)) if len(diffs) else 1


def default_gap(seq: RGBDSequence, frames: int = 10) -> int:
    """The paper's ScanNet spacing (10 recorded frames) in this folder's index units, capped at half the
    sequence so that a small folder still yields several pairs."""
    gap = max(1, round(frames / frame_step(seq)))
    return max(1, min(gap, len(seq) // 2, len(seq) - 1))


def explain_default_gap(seq: RGBDSequence, frames: int = 10) -> str:
    """One line saying how the default gap of `seq` was chosen (printed before scoring)."""
    step, gap = frame_step(seq), default_gap(seq, frames)
    why = f"{frames} recorded frames (the paper's ScanNet spacing) / {step} recorded frame(s) per file"
    if gap < max(1, round(frames / step)):
        why += f", capped at half of the {len(seq)} frames"
    return f"gap {gap} = {why}; --gap N to change"


def select_pairs(
    n_frames: int, gap: int, max_pairs: int | None = None, seed: int = 0, stride: int = 1
) -> list[tuple[int, int]]:
    """(i, i + gap) for i = 0, stride, 2 stride, ...; beyond max_pairs a seeded random subset, in order."""
    if gap < 1:
        raise StitchError(f"gap must be >= 1, got {gap}")
    pairs = [(i, i + gap) for i in range(0, n_frames - gap, max(1, stride))]
    if not pairs:
        raise StitchError(f"gap {gap} leaves no pairs in {n_frames} frames; use a smaller --gap")
    if max_pairs is not None and max_pairs < len(pairs):
        if max_pairs < 1:
            raise StitchError(f"--max-pairs must be >= 1, got {max_pairs}")
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(pairs), size=max_pairs, replace=False))
        pairs = [pairs[k] for k in keep]
    return pairs


# --- partial depth by rendering -------------------------------------------------------------------


@dataclass
class PartialDepth:
    known_depth: np.ndarray  # [H, W] float32 metres, 0 off `covered`
    covered: np.ndarray  # [H, W] bool (alpha > 0.5, eroded)
    alpha: np.ndarray  # [H, W] float32
    renderer: str


def render_partial_depth(
    src: RGBDFrame,
    dst: RGBDFrame,
    scale_factor: float = 0.5,
    opacity: float = 0.95,
    erode_px: int = 2,
    threshold: float = 0.5,
    renderer: str = "auto",
) -> PartialDepth:
    """Render frame `src`'s ground-truth geometry into `dst`'s camera -> known depth on the covered pixels.

    renderer: "splat" (Gaussians + splat.render.render_camera), "points" (splat.cameras.warp_depth z-buffer,
    a fallback without the Gaussian renderer) or "auto" (splat if importable)."""
    from splat.cameras import unproject_depth, warp_depth

    if renderer == "auto":
        try:
            importlib.import_module("splat.render")
            renderer = "splat"
        except ImportError:
            renderer = "points"
    valid = src.valid
    cam = dst.camera
    if renderer == "splat":
        import torch

        from splat.gaussians import Gaussians
        from splat.render import render_camera

        points = unproject_depth(src.camera, src.depth, valid)  # [M, 3]
        gaussians = Gaussians.from_points(
            points, src.image[valid], sh_degree=0, opacity=opacity, scale_factor=scale_factor
        )
        with torch.no_grad():
            out = render_camera(gaussians, cam)
        alpha = out.alpha[0, ..., 0].numpy().astype(np.float32)
        depth = out.depth[0, ..., 0].numpy().astype(np.float32)
    elif renderer == "points":
        depth = warp_depth(src.camera, src.depth, cam, valid).astype(np.float32)
        hit = depth > 0
        # Close the pinholes of a point splat (the Gaussian renderer has none) before thresholding.
        closed = ndimage.binary_closing(hit, structure=np.ones((3, 3), bool), border_value=1)
        depth = np.where(hit, depth, ndimage.maximum_filter(depth, size=3)).astype(np.float32)
        alpha = (closed & (depth > 0)).astype(np.float32)
    else:
        raise StitchError(f"unknown renderer {renderer!r}; use auto, splat or points")
    covered, _ = coverage_masks(alpha, erode_px=erode_px, dilate_px=erode_px, threshold=threshold)
    covered &= depth > 0
    return PartialDepth(np.where(covered, depth, 0.0).astype(np.float32), covered, alpha, renderer)


# --- metrics --------------------------------------------------------------------------------------


def depth_metrics(
    pred: np.ndarray,  # [H, W] metres
    gt: np.ndarray,  # [H, W] metres, 0 = no ground truth
    covered: np.ndarray,  # [H, W] bool, the pixels the method was given
    band_px: float = 10.0,
) -> dict[str, float]:
    """Scores on uncovered pixels with ground truth (see module doc); NaN where a set is empty."""
    evaluate = (~covered) & (gt > 0) & np.isfinite(gt)
    n = int(evaluate.sum())
    out: dict[str, float] = {"n_pixels": float(n)}
    p = np.asarray(pred, dtype=np.float64)[evaluate]
    g = np.asarray(gt, dtype=np.float64)[evaluate]
    if n == 0:
        out.update({k: math.nan for k in METRICS})
        out["n_seam"] = 0.0
        return out
    err = np.abs(p - g)
    out["mae"] = float(err.mean())
    out["rmse"] = float(np.sqrt((err**2).mean()))
    out["absrel"] = float((err / g).mean())
    ratio = np.maximum(p / g, g / np.maximum(p, 1e-9))
    out["delta1"] = float((ratio < 1.25).mean())
    if covered.any():
        dist = ndimage.distance_transform_edt(~covered)  # distance to the nearest covered pixel
        band = evaluate & (dist <= band_px)
    else:
        band = np.zeros_like(evaluate)
    out["n_seam"] = float(band.sum())
    out["seam_mae"] = float(np.abs(pred[band] - gt[band]).mean()) if band.any() else math.nan
    return out


# --- the run --------------------------------------------------------------------------------------


@dataclass
class BenchConfig:
    gap: int | None = None  # None: default_gap(sequence, gap_frames)
    gap_frames: int = 10  # the default gap in recorded frames (scannet protocol: 10)
    stride_frames: int = 0  # first frames of pairs every this many recorded frames (scannet: 50; 0: all)
    sweep_gaps: bool = True  # also score gap/2 and 2*gap on a few pairs (the MAE-vs-gap figure)
    sweep_pairs: int = 6
    min_coverage: float = 0.0  # skip pairs whose render covers less of frame j (Hypersim protocol: 0.8)
    max_pairs: int | None = None
    seed: int = 0
    band_px: float = 10.0
    erode_px: int = 2
    scale_factor: float = 0.5  # Gaussian size and opacity as the pipeline seeds them (engine.config)
    opacity: float = 0.95
    renderer: str = "auto"
    figure: bool = True
    protocol: str = "default"  # engine.bench.sequences.PROTOCOLS

    def protocol_key(self) -> str:
        """What a cached per-pair result depends on (method settings are added per method)."""
        d = {"v": BENCH_VERSION, "band": self.band_px, "erode": self.erode_px, "scale": self.scale_factor,
             "opacity": self.opacity, "min_coverage": self.min_coverage}  # fmt: skip
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class BenchRow:
    level: str  # "sequence" (one gap of one sequence), "dataset" or "overall" (main-gap pairs pooled)
    dataset: str  # ScanNet, Hypersim, 7-Scenes, ICL-NUIM/Redwood, generic; "all" for the overall row
    sequence: str  # path under the benchmark root; "all" for dataset and overall rows
    gap: int  # frame gap j - i in index units; 0 on pooled rows (each sequence's own gap)
    method: str
    n_pairs: int
    mae: float
    rmse: float
    absrel: float
    delta1: float
    seam_mae: float
    scored_fraction: float  # mean fraction of frame j's pixels scored (uncovered and with ground truth)
    seconds: float  # mean method time per pair


COLUMN_NOTES = (
    "Columns: *pairs* scored (i, j) pairs; *MAE/RMSE* metres, *AbsRel* |pred - gt| / gt, *d<1.25* share of "
    "pixels within 25 % of the truth, *seam MAE* MAE within 10 px of the covered region, all on the scored "
    "pixels of frame j (not covered by frame i's render, with ground truth); *scored* the mean share of "
    "frame j's pixels that were scored; *s/pair* the method's mean seconds per pair. Dataset and overall "
    "rows pool the pairs of each sequence's own gap (each pair counts once)."
)


@dataclass
class BenchTable:
    rows: list[BenchRow]
    pair_results: list[dict] = field(default_factory=list)
    out_dir: Path | None = None
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        head = (
            "| level | dataset | sequence | gap | method | pairs | MAE (m) | RMSE | AbsRel | d<1.25 "
            "| seam MAE | scored | s/pair |"
        )
        lines = [head, "|" + "---|" * 13]
        for r in self.rows:
            lines.append(
                f"| {r.level} | {r.dataset} | {r.sequence} | {r.gap or 'own'} | {r.method} | {r.n_pairs} | "
                f"{r.mae:.4f} | {r.rmse:.4f} | {r.absrel:.4f} | {r.delta1:.3f} | {r.seam_mae:.4f} | "
                f"{100 * r.scored_fraction:.1f}% | {r.seconds:.2f} |"
            )
        return "\n".join(lines)


def _discover_sequences(data_dir: Path, log: Callable[[str], None] = print) -> list:
    from engine.bench.sequences import discover_sequences

    return discover_sequences(Path(data_dir), log)


def _method_key(method: DepthCompleter) -> str:
    try:
        desc = method.describe()
    except Exception:  # describe() is informational; never let it break a run
        desc = {"name": getattr(method, "name", "?")}
    return hashlib.sha1(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _cached_partial(
    cache: Path, seq: RGBDSequence, i: int, j: int, src: RGBDFrame, dst: RGBDFrame, config: BenchConfig
) -> PartialDepth:
    path = cache / f"{seq.frames[i].name}__{seq.frames[j].name}_{config.protocol_key()}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return PartialDepth(z["known"], z["covered"], z["alpha"], str(z["renderer"]))
        except (OSError, ValueError, KeyError):
            pass  # a truncated cache file from an interrupted run: render again
    part = render_partial_depth(
        src, dst, config.scale_factor, config.opacity, erode_px=config.erode_px, renderer=config.renderer
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp, known=part.known_depth, covered=part.covered, alpha=part.alpha, renderer=part.renderer
    )
    tmp.replace(path)
    return part


@dataclass
class _Plan:
    """The pairs of one sequence: [(gap, pairs)], the main gap first."""

    item: Any  # engine.bench.sequences.BenchSequence
    config: BenchConfig
    main_gap: int
    gaps: list[tuple[int, list[tuple[int, int]]]]


def plan_sequences(items: list, config: BenchConfig, log: Callable[[str], None] = print) -> list[_Plan]:
    """Pairs per sequence under each one's protocol. An explicit gap too large for a sequence is an error."""
    from engine.bench.sequences import protocol_config

    too_short = [f"{it.seq.name} ({len(it.seq)} frames)" for it in items
                 if config.gap is not None and config.gap >= len(it.seq)]  # fmt: skip
    if too_short:
        raise StitchError(
            f"--gap {config.gap} leaves no pairs in {', '.join(too_short[:5])}"
            f"{' ...' if len(too_short) > 5 else ''}; use --gap <= {min(len(it.seq) for it in items) - 1}"
        )
    plans = []
    for it in items:
        seq = it.seq
        cfg = protocol_config(config, it.protocol)
        step = frame_step(seq)
        main_gap = cfg.gap if cfg.gap is not None else default_gap(seq, cfg.gap_frames)
        stride = max(1, round(cfg.stride_frames / step)) if cfg.stride_frames else 1
        gaps = [(main_gap, select_pairs(len(seq), main_gap, cfg.max_pairs, cfg.seed, stride))]
        if cfg.sweep_gaps:
            for g in sorted({max(1, main_gap // 2), min(2 * main_gap, len(seq) - 1)} - {main_gap}):
                limit = min(cfg.sweep_pairs, cfg.max_pairs or cfg.sweep_pairs)
                gaps.append((g, select_pairs(len(seq), g, limit, cfg.seed, stride)))
        how = f"gap {main_gap} (--gap)" if cfg.gap is not None else explain_default_gap(seq, cfg.gap_frames)
        if stride > 1:
            how += f"; first frames every {stride} files ({cfg.stride_frames} recorded frames)"
        log(f"{seq.name} ({it.dataset}, protocol {it.protocol}): {how}")
        plans.append(_Plan(it, cfg, main_gap, gaps))
    return plans


def score_sequences(
    items: list,
    completers: dict[str, DepthCompleter],
    config: BenchConfig,
    out: Path,
    log: Callable[[str], None] = print,
    plans: list[_Plan] | None = None,
) -> tuple[list[dict], list[dict]]:
    """Score every planned pair of `items` (BenchSequences) -> (per-pair results, figure cases).

    Progress: one line per pair with the count over all sequences and an ETA from the pairs computed so far
    (cached pairs cost nothing and do not count)."""
    plans = plans if plans is not None else plan_sequences(items, config, log)
    keys = {name: _method_key(m) for name, m in completers.items()}
    total = sum(len(pairs) for p in plans for _, pairs in p.gaps)
    log(f"{total} pairs to score over {len(plans)} sequence(s) with {', '.join(completers)}"
        f"{'' if config.max_pairs else ' (--max-pairs N caps the pairs per sequence)'}")  # fmt: skip
    results: list[dict] = []
    figure_cases: list[dict] = []
    done, computed, spent, t_start = 0, 0, 0.0, time.perf_counter()
    for plan in plans:
        seq = plan.item.seq
        for g, pairs in plan.gaps:
            for i, j in pairs:
                t0 = time.perf_counter()
                pair_results, was_cached = _run_pair(
                    plan.item, i, j, g, completers, keys, plan.config, out, figure_cases, plan.main_gap
                )
                dt = time.perf_counter() - t0
                done += 1
                if not was_cached:
                    computed += 1
                    spent += dt
                results.extend(pair_results)
                eta = _clock(spent / computed * (total - done)) if computed else "--:--"
                if pair_results:
                    what = " ".join(f"{r['method']}={r['mae']:.3f}" for r in pair_results)
                else:
                    what = f"skipped (coverage < {plan.config.min_coverage:.0%} or too few scorable pixels)"
                log(f"  [{done}/{total}] {seq.name} gap {g} {seq.frames[i].name} -> {seq.frames[j].name}: "
                    f"{what} ({'cached' if was_cached else f'{dt:.1f}s'}, ETA {eta})")  # fmt: skip
                if computed == 1 and not was_cached and total > done:  # an estimate up front
                    log(f"  estimated time for all {total} pairs: {_clock(spent / computed * total)} "
                        f"(elapsed {_clock(time.perf_counter() - t_start)})")  # fmt: skip
    return results, figure_cases


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def run_geometry_benchmark(
    data_dir: str | Path,
    out_dir: str | Path,
    methods: Sequence[str] | dict[str, DepthCompleter] | None = None,
    gap: int | None = None,
    max_pairs: int | None = None,
    seed: int = 0,
    config: BenchConfig | None = None,
    log: Callable[[str], None] = print,
    cluster: Any = None,
) -> BenchTable:
    """Run the benchmark on one RGB-D folder or every sequence under `data_dir` -> BenchTable.

    methods: names from the registry (None = all available) or ready DepthCompleters by name.
    gap / max_pairs / seed override `config`. Results are cached per pair and method in out_dir; a rerun
    only computes what is missing. cluster: engine.cluster.ClusterOptions to shard the sequences over
    submitit jobs (local or SLURM; methods must then be names). Nothing is written when the inputs are wrong
    (bad gap, no sequence, unknown method); a run that fails before scoring leaves no empty folder."""
    from engine.bench.sequences import SequenceShard, apply_protocol

    config = config or BenchConfig()
    overrides = {k: v for k, v in {"gap": gap, "max_pairs": max_pairs}.items() if v is not None}
    config = BenchConfig(**{**asdict(config), **overrides, "seed": seed})
    out = Path(out_dir)
    sharded = cluster is not None and cluster.executor != "inline"
    if sharded and isinstance(methods, dict):
        raise StitchError("sharded benchmark runs take method names (they are built in each job)")
    completers = methods if isinstance(methods, dict) else build_methods(methods, log)
    items = _discover_sequences(Path(data_dir), log)
    apply_protocol(items, config.protocol, log)
    plans = plan_sequences(items, config, log)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        if sharded:
            from engine.cluster import run_shards, split_shards

            names = list(completers)
            shards = [SequenceShard(part, names, config, out) for part in split_shards(items, cluster.shards)]
            outcomes = run_shards(shards, cluster, out / "submitit", log=log)
            failed = [o for o in outcomes if isinstance(o, BaseException)]
            if failed:
                raise StitchError(
                    f"{len(failed)} of {len(shards)} benchmark shards failed "
                    f"({str(failed[0]).strip().splitlines()[0][:200]}); logs in {out / 'submitit'}; "
                    "run the same command again to resume"
                )
            results = [r for o in outcomes for r in o["results"]]
            figure_cases = [c for o in outcomes for c in o["figure_cases"]][:2]
        else:
            results, figure_cases = score_sequences(items, completers, config, out, log, plans)
        if not results:
            raise StitchError(
                "no pair could be scored (every pair skipped: coverage below --min-coverage or nothing "
                "uncovered with ground truth); lower --min-coverage or use a larger --gap"
            )
    except BaseException:
        if created and out.is_dir() and not _has_files(out):
            shutil.rmtree(out, ignore_errors=True)  # nothing worth keeping: no empty folder behind
        raise
    main_gaps = {p.item.seq.name: p.main_gap for p in plans}
    table = BenchTable(_summarise(results, main_gaps), results, out)
    _write_outputs(table, out)
    if config.figure and results:
        try:
            from engine.bench.figure import save_figure

            save_figure(table, figure_cases, out / "figure.png")
        except ImportError as exc:
            table.notes.append(f"no figure: {exc}")
            log(f"no figure: {exc}")
    return table


def _has_files(folder: Path) -> bool:
    return any(p.is_file() for p in folder.rglob("*"))


def _run_pair(
    item, i, j, g, completers, keys, config, out, figure_cases, main_gap
) -> tuple[list[dict], bool]:
    """-> (results of the pair, whether every result came from the cache)."""
    seq = item.seq
    pair_dir = out / "pairs" / seq.name / f"gap{g}"
    ni, nj = seq.frames[i].name, seq.frames[j].name
    todo, done = {}, []
    for name in completers:
        path = pair_dir / name / f"{ni}__{nj}.json"
        cached = _load_json(path) if path.is_file() else None
        if cached and cached.get("key") == f"{config.protocol_key()}-{keys[name]}":
            if cached.get("skipped"):
                return [], True
            result = dict(cached["result"])
            if "uncovered" in result:  # written before the column was renamed: same number
                result["scored_fraction"] = result.pop("uncovered")
            done.append({**result, "dataset": item.dataset, "sequence": seq.name})
        else:
            todo[name] = path
    # The figure shows two pairs of the first sequences (at most 4 rows in all).
    this_seq = len({c["pair"] for c in figure_cases if c["sequence"] == seq.name})
    want_figure = config.figure and g == main_gap and this_seq < 2 and len(figure_cases) < 4
    if not todo and not want_figure:
        return _ordered(done, completers), True
    src, dst = seq.load(i), seq.load(j)
    part = _cached_partial(out / "renders" / seq.name, seq, i, j, src, dst, config)
    scored = (~part.covered) & dst.valid
    if int(scored.sum()) < MIN_EVAL_PIXELS or part.covered.mean() < config.min_coverage:
        for name, path in todo.items():
            _write_json(path, {"key": f"{config.protocol_key()}-{keys[name]}", "skipped": True})
        return [], False
    preds = {}
    for name, path in todo.items():
        method = completers[name]
        t0 = time.perf_counter()
        pred = np.asarray(method(dst.image, part.known_depth, part.covered), dtype=np.float32)
        seconds = time.perf_counter() - t0
        if pred.shape != dst.depth.shape or not np.isfinite(pred).all():
            raise StitchError(
                f"method {name} returned {pred.shape} / non-finite depth; it must be [H, W] finite"
            )
        preds[name] = pred
        m = depth_metrics(pred, dst.depth, part.covered, config.band_px)
        result = {
            "dataset": item.dataset,
            "sequence": seq.name,
            "gap": g,
            "frame_i": ni,
            "frame_j": nj,
            "method": name,
            "scored_fraction": float(scored.sum() / scored.size),
            "coverage": float(part.covered.mean()),
            "seconds": seconds,
            "renderer": part.renderer,
            **m,
        }
        _write_json(path, {"key": f"{config.protocol_key()}-{keys[name]}", "result": result})
        done.append(result)
    if want_figure:
        for name, method in completers.items():
            if name not in preds:
                preds[name] = np.asarray(method(dst.image, part.known_depth, part.covered), dtype=np.float32)
        figure_cases.append(
            {"dataset": item.dataset, "sequence": seq.name, "pair": f"{ni}->{nj}", "image": dst.image,
             "gt": dst.depth, "known": part.known_depth, "covered": part.covered, "preds": preds}
        )  # fmt: skip
    return _ordered(done, completers), not todo


def _ordered(results: list[dict], completers) -> list[dict]:
    order = list(completers)
    return sorted(results, key=lambda r: order.index(r["method"]))


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)


def _mean_row(level, dataset, sequence, gap, method, rs) -> BenchRow:
    def mean(k):
        vals = [r[k] for r in rs if r.get(k) is not None and not math.isnan(r[k])]
        return float(np.mean(vals)) if vals else math.nan

    return BenchRow(level, dataset, sequence, gap, method, len(rs), mean("mae"), mean("rmse"), mean("absrel"),
                    mean("delta1"), mean("seam_mae"), mean("scored_fraction"), mean("seconds"))  # fmt: skip


def _summarise(results: list[dict], main_gaps: dict[str, int] | None = None) -> list[BenchRow]:
    """Rows per (sequence, gap, method); then, over each sequence's main gap, per dataset and overall."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        key = (r["dataset"], r.get("sequence", r["dataset"]), r["gap"], r["method"])
        groups.setdefault(key, []).append(r)
    rows = [_mean_row("sequence", ds, sq, g, m, rs) for (ds, sq, g, m), rs in groups.items()]
    main = [r for r in results if main_gaps is None or main_gaps.get(r.get("sequence")) == r["gap"]]
    methods = list(dict.fromkeys(r["method"] for r in main))
    datasets = list(dict.fromkeys(r["dataset"] for r in main))
    n_seqs = len({r.get("sequence") for r in main})
    if n_seqs > 1:
        for ds in datasets:
            for m in methods:
                rs = [r for r in main if r["dataset"] == ds and r["method"] == m]
                gaps = {r["gap"] for r in rs}
                if rs and len({r.get("sequence") for r in rs}) > 1:
                    rows.append(_mean_row("dataset", ds, "all", gaps.pop() if len(gaps) == 1 else 0, m, rs))
        for m in methods:
            rs = [r for r in main if r["method"] == m]
            gaps = {r["gap"] for r in rs}
            rows.append(_mean_row("overall", "all", "all", gaps.pop() if len(gaps) == 1 else 0, m, rs))
    return rows


def _write_outputs(table: BenchTable, out: Path) -> None:
    if table.pair_results:
        cols = list(dict.fromkeys(k for r in table.pair_results for k in r))
        with (out / "results.csv").open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            w.writerows(table.pair_results)
    fields = list(BenchRow.__dataclass_fields__)
    with (out / "summary.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(asdict(r) for r in table.rows)
    (out / "summary.json").write_text(
        json.dumps({"version": BENCH_VERSION, "rows": [asdict(r) for r in table.rows], "paper": PAPER_MAE,
                    "columns": COLUMN_NOTES}),
        encoding="utf-8",
    )  # fmt: skip
    paper = "\n".join(f"| {k} | {v[0]} | {v[1]} |" for k, v in PAPER_MAE.items())
    (out / "summary.md").write_text(
        "# Scene geometry benchmark\n\n"
        "MAE in metres on pixels the render of frame i did not cover in frame j, with valid ground truth.\n\n"
        + table.markdown()
        + "\n\n"
        + COLUMN_NOTES
        + "\n\nPaper figures (different data: ScanNet / Hypersim, learned models; indicative):\n\n"
        "| method | ScanNet MAE | Hypersim MAE |\n|---|---|---|\n" + paper + "\n",
        encoding="utf-8",
    )
