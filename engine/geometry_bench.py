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
baselines, plus the learned backends through engine.backends ("invisible-stitch": the paper's completion
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
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from engine.depth import DepthCompleter
from engine.errors import StitchError
from engine.fusion import coverage_masks
from engine.rgbd import RGBDFrame, RGBDSequence, detect_layout, load_rgbd_sequence

BENCH_VERSION = 1  # bump when the protocol changes: cached per-pair results of other versions are recomputed
PAPER_MAE = {  # PAPER-NOTES (secondary notes, indicative): MAE in metres, ScanNet / Hypersim
    "Invisible Stitch": (0.0816, 0.7295),
    "ZoeDepth + global scale & shift": (0.1293, 0.7872),
    "LucidDreamer-style interpolation": (0.1604, 0.8057),
    "CostDCNet": (0.585, 4.01),
}
METRICS = ("mae", "rmse", "absrel", "delta1", "seam_mae")
PLUGIN_MODULES = ("engine.depth_mono", "engine.depth_network")
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
        from engine.backends import build_depth_completer

        return build_depth_completer(spec)

    return factory


def _register_builtin() -> None:
    from engine.depth_baselines import InterpolationCompleter, ScaleShiftAligned, ZeroKnownMonocular
    from engine.depth_classical import ClassicalDepthCompleter, NearestFillCompleter

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
                raise StitchError(f"benchmark method {name} is not available: {exc}") from exc
            log(f"skipping method {name}: {str(exc).splitlines()[0][:160]}")
    if not methods:
        raise StitchError("no benchmark method could be built; see the notes above")
    return methods


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


def default_gap(seq: RGBDSequence) -> int:
    """The paper's ScanNet spacing (10 recorded frames) in this folder's index units, capped at half the
    sequence so that a small folder still yields several pairs."""
    gap = max(1, round(10 / frame_step(seq)))
    return max(1, min(gap, len(seq) // 2, len(seq) - 1))


def select_pairs(
    n_frames: int, gap: int, max_pairs: int | None = None, seed: int = 0
) -> list[tuple[int, int]]:
    """All (i, i + gap); if more than max_pairs, a seeded random subset, returned in order."""
    if gap < 1:
        raise StitchError(f"gap must be >= 1, got {gap}")
    pairs = [(i, i + gap) for i in range(n_frames - gap)]
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

    renderer: "splat" (Gaussians + splat.render.render_camera), "points" (engine.cameras.warp_depth z-buffer,
    a fallback without the Gaussian renderer) or "auto" (splat if importable)."""
    from engine.cameras import unproject_depth, warp_depth

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
    gap: int | None = None  # None: default_gap(sequence)
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

    def protocol_key(self) -> str:
        """What a cached per-pair result depends on (method settings are added per method)."""
        d = {"v": BENCH_VERSION, "band": self.band_px, "erode": self.erode_px, "scale": self.scale_factor,
             "opacity": self.opacity, "min_coverage": self.min_coverage}  # fmt: skip
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class BenchRow:
    dataset: str
    gap: int
    method: str
    n_pairs: int
    mae: float
    rmse: float
    absrel: float
    delta1: float
    seam_mae: float
    uncovered: float  # mean fraction of scored pixels per pair
    seconds: float  # mean method time per pair


@dataclass
class BenchTable:
    rows: list[BenchRow]
    pair_results: list[dict] = field(default_factory=list)
    out_dir: Path | None = None
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        head = "| dataset | gap | method | pairs | MAE (m) | RMSE | AbsRel | d<1.25 | seam MAE | scored | s |"
        lines = [head, "|" + "---|" * 11]
        for r in self.rows:
            lines.append(
                f"| {r.dataset} | {r.gap} | {r.method} | {r.n_pairs} | {r.mae:.4f} | {r.rmse:.4f} | "
                f"{r.absrel:.4f} | {r.delta1:.3f} | {r.seam_mae:.4f} | {100 * r.uncovered:.1f}% | "
                f"{r.seconds:.2f} |"
            )
        return "\n".join(lines)


def _discover_sequences(data_dir: Path) -> list[RGBDSequence]:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise StitchError(f"benchmark data folder {data_dir} does not exist")
    try:
        detect_layout(data_dir)
        return [load_rgbd_sequence(data_dir)]
    except StitchError as exc:
        if "not a known RGB-D layout" not in str(exc):
            raise
    seqs = []
    for sub in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        try:
            detect_layout(sub)
        except StitchError:
            continue
        seqs.append(load_rgbd_sequence(sub))
    if not seqs:
        raise StitchError(f"{data_dir} holds no RGB-D sequence with poses (see engine/rgbd.py for layouts)")
    return seqs


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


def run_geometry_benchmark(
    data_dir: str | Path,
    out_dir: str | Path,
    methods: Sequence[str] | dict[str, DepthCompleter] | None = None,
    gap: int | None = None,
    max_pairs: int | None = None,
    seed: int = 0,
    config: BenchConfig | None = None,
    log: Callable[[str], None] = print,
) -> BenchTable:
    """Run the benchmark on one RGB-D folder (or every sequence folder inside `data_dir`) -> BenchTable.

    methods: names from the registry (None = all available) or ready DepthCompleters by name.
    gap / max_pairs / seed override `config`. Results are cached per pair and method in out_dir; a rerun
    only computes what is missing."""
    config = config or BenchConfig()
    overrides = {k: v for k, v in {"gap": gap, "max_pairs": max_pairs}.items() if v is not None}
    config = BenchConfig(**{**asdict(config), **overrides, "seed": seed})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    completers = methods if isinstance(methods, dict) else build_methods(methods, log)
    keys = {name: _method_key(m) for name, m in completers.items()}
    sequences = _discover_sequences(Path(data_dir))

    results: list[dict] = []
    figure_cases: list[dict] = []
    for seq in sequences:
        main_gap = config.gap if config.gap is not None else default_gap(seq)
        gap_plan = [(main_gap, config.max_pairs)]
        if config.sweep_gaps:
            for g in sorted({max(1, main_gap // 2), min(2 * main_gap, len(seq) - 1)} - {main_gap}):
                gap_plan.append((g, min(config.sweep_pairs, config.max_pairs or config.sweep_pairs)))
        for g, limit in gap_plan:
            if g >= len(seq):
                continue
            pairs = select_pairs(len(seq), g, limit, config.seed)
            log(f"{seq.name} ({seq.layout}): gap {g}, {len(pairs)} pairs, methods {', '.join(completers)}")
            for k, (i, j) in enumerate(pairs):
                t0 = time.perf_counter()
                pair_results = _run_pair(seq, i, j, g, completers, keys, config, out, figure_cases, main_gap)
                results.extend(pair_results)
                if pair_results:
                    maes = " ".join(f"{r['method']}={r['mae']:.3f}" for r in pair_results)
                    log(f"  [{k + 1}/{len(pairs)}] {seq.frames[i].name} -> {seq.frames[j].name}: {maes} "
                        f"({time.perf_counter() - t0:.1f}s)")  # fmt: skip
                else:
                    log(f"  [{k + 1}/{len(pairs)}] {seq.frames[i].name} -> {seq.frames[j].name}: skipped "
                        f"(coverage < {config.min_coverage:.0%} or too few scorable pixels)")  # fmt: skip

    if not results:
        raise StitchError(
            "no pair could be scored (every pair skipped: coverage below --min-coverage or nothing uncovered "
            "with ground truth); lower --min-coverage or use a larger --gap"
        )
    table = BenchTable(_summarise(results), results, out)
    _write_outputs(table, out)
    if config.figure and results:
        try:
            from engine.geometry_bench_figure import save_figure

            save_figure(table, figure_cases, out / "figure.png")
        except ImportError as exc:
            table.notes.append(f"no figure: {exc}")
            log(f"no figure: {exc}")
    return table


def _run_pair(seq, i, j, g, completers, keys, config, out, figure_cases, main_gap) -> list[dict]:
    pair_dir = out / "pairs" / seq.name / f"gap{g}"
    ni, nj = seq.frames[i].name, seq.frames[j].name
    todo, done = {}, []
    for name in completers:
        path = pair_dir / name / f"{ni}__{nj}.json"
        cached = _load_json(path) if path.is_file() else None
        if cached and cached.get("key") == f"{config.protocol_key()}-{keys[name]}":
            if cached.get("skipped"):
                return []
            done.append(cached["result"])
        else:
            todo[name] = path
    want_figure = g == main_gap and len({c["pair"] for c in figure_cases if c["dataset"] == seq.name}) < 2
    if not todo and not want_figure:
        return done
    src, dst = seq.load(i), seq.load(j)
    part = _cached_partial(out / "renders" / seq.name, seq, i, j, src, dst, config)
    scored = (~part.covered) & dst.valid
    if int(scored.sum()) < MIN_EVAL_PIXELS or part.covered.mean() < config.min_coverage:
        for name, path in todo.items():
            _write_json(path, {"key": f"{config.protocol_key()}-{keys[name]}", "skipped": True})
        return []
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
            "dataset": seq.name,
            "gap": g,
            "frame_i": ni,
            "frame_j": nj,
            "method": name,
            "uncovered": float(scored.sum() / scored.size),
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
            {"dataset": seq.name, "pair": f"{ni}->{nj}", "image": dst.image, "gt": dst.depth,
             "known": part.known_depth, "covered": part.covered, "preds": preds}
        )  # fmt: skip
    order = list(completers)
    return sorted(done, key=lambda r: order.index(r["method"]))


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)


def _summarise(results: list[dict]) -> list[BenchRow]:
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["dataset"], r["gap"], r["method"]), []).append(r)
    rows = []
    for (ds, g, method), rs in groups.items():

        def mean(k, rs=rs):
            vals = [r[k] for r in rs if r.get(k) is not None and not math.isnan(r[k])]
            return float(np.mean(vals)) if vals else math.nan

        rows.append(
            BenchRow(ds, g, method, len(rs), mean("mae"), mean("rmse"), mean("absrel"), mean("delta1"),
                     mean("seam_mae"), mean("uncovered"), mean("seconds"))
        )  # fmt: skip
    return rows


def _write_outputs(table: BenchTable, out: Path) -> None:
    if table.pair_results:
        cols = list(table.pair_results[0].keys())
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
        json.dumps({"version": BENCH_VERSION, "rows": [asdict(r) for r in table.rows], "paper": PAPER_MAE}),
        encoding="utf-8",
    )  # fmt: skip
    paper = "\n".join(f"| {k} | {v[0]} | {v[1]} |" for k, v in PAPER_MAE.items())
    (out / "summary.md").write_text(
        "# Scene geometry benchmark\n\n"
        "MAE in metres on pixels the render of frame i did not cover in frame j, with valid ground truth.\n\n"
        + table.markdown()
        + "\n\nPaper figures (different data: ScanNet / Hypersim, learned models; indicative):\n\n"
        "| method | ScanNet MAE | Hypersim MAE |\n|---|---|---|\n" + paper + "\n",
        encoding="utf-8",
    )
