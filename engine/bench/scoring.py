"""Scoring a benchmark's sequences: pairs planned per protocol, each pair scored once and cached in out_dir.

Per pair and method: `pairs/<sequence>/gap<g>/<method>/<frame_i>__<frame_j>.json` (the run resumes from
these) and `renders/<sequence>/...npz` (cached partial depths).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.backends.depth import DepthCompleter
from engine.bench.geometry_config import BenchConfig
from engine.bench.methods import build_methods
from engine.bench.metrics import depth_metrics
from engine.bench.pairs import default_gap, explain_default_gap, frame_step, select_pairs
from engine.bench.partial_depth import PartialDepth, render_partial_depth
from engine.bench.rgbd import RGBDFrame, RGBDSequence
from engine.bench.sequences import BenchSequence, protocol_config
from splat.errors import StitchError

MIN_EVAL_PIXELS = 50  # pairs with fewer uncovered pixels with ground truth are skipped (nothing to score)


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
        src,
        dst,
        config.scale_factor,
        config.opacity,
        erode_px=config.erode_px,
        renderer=config.renderer,
        scale_rule=config.scale_rule,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp, known=part.known_depth, covered=part.covered, alpha=part.alpha, renderer=part.renderer
    )
    tmp.replace(path)
    return part


@dataclass
class SequencePlan:
    """The pairs of one sequence: [(gap, pairs)], the main gap first."""

    item: Any  # engine.bench.sequences.BenchSequence
    config: BenchConfig
    main_gap: int
    gaps: list[tuple[int, list[tuple[int, int]]]]


def plan_sequences(
    items: list, config: BenchConfig, log: Callable[[str], None] = print
) -> list[SequencePlan]:
    """Pairs per sequence under each one's protocol. An explicit gap too large for a sequence is an error."""
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
        plans.append(SequencePlan(it, cfg, main_gap, gaps))
    return plans


def score_sequences(
    items: list,
    completers: dict[str, DepthCompleter],
    config: BenchConfig,
    out: Path,
    log: Callable[[str], None] = print,
    plans: list[SequencePlan] | None = None,
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


@dataclass
class SequenceShard:
    """Benchmark sequences of one shard (a picklable submitit job): scores every pair, cached per pair."""

    seqs: list[BenchSequence]
    methods: list[str] | None
    config: BenchConfig
    out: Path

    def __call__(self) -> dict:
        completers = build_methods(self.methods, log=lambda s: None)
        results, cases = score_sequences(self.seqs, completers, self.config, self.out, log=print)
        return {"results": results, "figure_cases": cases}

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Preempted or timed out on SLURM: requeue; scored pairs are cached and skipped."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)
