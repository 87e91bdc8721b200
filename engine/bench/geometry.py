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

Methods come from a registry (engine/bench/methods.py): the classical default and its baselines, the
learned backends, any `depth:SPEC`. Pairs: engine/bench/pairs.py; the partial depth: partial_depth.py;
the scores: metrics.py; the per-pair work and its cache: scoring.py; the tables and files: results.py.

Outputs in out_dir: `pairs/<dataset>/gap<g>/<method>/<frame_i>__<frame_j>.json` (one per pair and method:
the run resumes from these), `renders/...npz` (cached partial depths), `results.csv` (every pair),
`summary.csv`, `summary.json`, `summary.md` and `figure.png` (error maps for a few pairs and MAE vs gap).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from engine.backends.depth import DepthCompleter
from engine.bench.figure import save_figure
from engine.bench.geometry_config import BenchConfig
from engine.bench.methods import build_methods
from engine.bench.results import BenchTable, summarise, write_outputs
from engine.bench.scoring import SequenceShard, plan_sequences, score_sequences
from engine.bench.sequences import apply_protocol, discover_sequences
from splat.errors import StitchError


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
    config = config or BenchConfig()
    overrides = {k: v for k, v in {"gap": gap, "max_pairs": max_pairs}.items() if v is not None}
    config = BenchConfig(**{**asdict(config), **overrides, "seed": seed})
    out = Path(out_dir)
    sharded = cluster is not None and cluster.executor != "inline"
    if sharded and isinstance(methods, dict):
        raise StitchError("sharded benchmark runs take method names (they are built in each job)")
    completers = methods if isinstance(methods, dict) else build_methods(methods, log)
    items = discover_sequences(Path(data_dir), log)
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
    table = BenchTable(summarise(results, main_gaps), results, out)
    write_outputs(table, out)
    if config.figure and results:
        try:
            save_figure(table, figure_cases, out / "figure.png")
        except ImportError as exc:
            table.notes.append(f"no figure: {exc}")
            log(f"no figure: {exc}")
    return table


def _has_files(folder: Path) -> bool:
    return any(p.is_file() for p in folder.rglob("*"))
