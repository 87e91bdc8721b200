"""`stitch`: the command line. Thin: parse flags, build a config, call a library function.

One file: every `stitch` command's flags in one place (cli.py is the one entry point of the layout; the
training sub-commands sit beside their code in completion/cli.py); each body is a call into a lower layer.

Every problem with the user's input surfaces as one line on stderr and exit code 2 (see `main`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from completion.cli import train_app
from splat.errors import StitchError

app = typer.Typer(
    help="Turn one photo (and a prompt) into a 3D Gaussian-splat scene, grown view by view.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks: scene geometry against real ground truth.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(train_app, name="train")
models_app = typer.Typer(
    help="Model registry: list the learned backends' weights, check what is available offline, download.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")


@app.command()
def generate(
    ctx: typer.Context,
    photo: Path | None = typer.Argument(
        None, help="Input photo (JPEG/PNG/WebP). Without one, --prompt paints the first view (--t2i)."
    ),
    prompt: str = typer.Option("", "--prompt", "-p", help="Text prompt for the outpainter."),
    mode: str = typer.Option("stage", "--mode", "-m", help="single | stage | 360 | orbit"),
    path: Path | None = typer.Option(None, "--path", help="Camera path JSON (overrides --mode)."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Scene file (.ply); default RUN_DIR/scene.ply"
    ),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="Run directory (default: next to --output)."),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue an interrupted run in this directory."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed + inputs = same scene)."),
    max_side: int = typer.Option(384, "--max-side", help="Longest image side the scene is built at."),
    depth: Path | None = typer.Option(
        None,
        "--depth-file",
        help="Depth for the photo: 16-bit PNG (mm) or .npy (m); replaces the first-view prior.",
    ),
    steps: int = typer.Option(-1, "--steps", help="Optimisation steps per view (-1: the preset's)."),
    preset: str = typer.Option("offline", "--preset", help="offline | paper | fast"),
    outpainter: str = typer.Option("", "--outpainter", help="classical | sd2 | HUB_ID | LOCAL_DIR"),
    depth_backend: str = typer.Option(
        "",
        "--depth",
        help="classical | invisible-stitch | mono:HUB_ID | DIR (completion net) | FILE.png/.npy (depth map)",
    ),
    model_path: Path | None = typer.Option(None, "--model-path", help="Local folder with model weights."),
    outpaint_steps: int = typer.Option(0, "--outpaint-steps", help="Diffusion outpainter steps (0: 50)."),
    t2i: str = typer.Option("", "--t2i", help="No photo: the first view's text-to-image model."),
    t2i_steps: int = typer.Option(0, "--t2i-steps", help="Its diffusion steps (0: 30)."),
    max_gaussians: int = typer.Option(
        0, "--max-gaussians", help="Gaussian budget for the scene (0: none); later views are seeded sparser."
    ),
    splat: bool = typer.Option(False, "--splat", help="Also export .splat next to the .ply."),
    spz: bool = typer.Option(False, "--spz", help="Also export .spz next to the .ply."),
    view: bool = typer.Option(False, "--view", help="Watch the scene grow in the browser (viser)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Viewer bind address (default: this machine only)."),
    port: int = typer.Option(8080, "--port", help="Viewer port."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    device: str = typer.Option("auto", "--device", help="auto (cuda when available) | cpu | cuda | cuda:N"),
    cpu_offload: bool = typer.Option(
        False, "--cpu-offload", help="Diffusion model CPU offload (needs accelerate): fits ~4 GB GPUs."
    ),
    attention_slicing: bool = typer.Option(
        False, "--attention-slicing", help="Diffusion attention slicing: lower GPU memory, a little slower."
    ),
) -> None:
    """Grow a Gaussian scene from PHOTO: render, outpaint, complete depth, add Gaussians, optimise."""
    from engine.config import generate_config_from_cli
    from engine.run import run_generate

    config = generate_config_from_cli(
        photo=photo,
        prompt=prompt,
        mode=mode,
        path=path,
        seed=seed,
        max_side=max_side,
        depth_file=depth,
        steps=steps,
        preset=preset,
        outpainter=outpainter,
        depth_backend=depth_backend,
        model_path=model_path,
        outpaint_steps=outpaint_steps,
        max_gaussians=max_gaussians,
        text_to_image=t2i,
        text_to_image_steps=t2i_steps,
    )
    run_generate(
        config,
        output=output,
        run_dir=run_dir,
        resume=resume,
        export_splat=splat,
        export_spz=spz,
        live_viewer=_live_viewer(view, host, port),
        quiet=quiet,
        explicit=_given_on_command_line(ctx),
        device=device,
        cpu_offload=cpu_offload,
        attention_slicing=attention_slicing,
    )


def _live_viewer(view: bool, host: str, port: int):
    """`--view`: the viewer the run starts once its folder exists (None: no viewer)."""
    if not view:
        return None
    from viewer import live_viewer_at

    return live_viewer_at(host, port)


def _given_on_command_line(ctx: typer.Context) -> frozenset[str]:
    """Names of the parameters the user typed (not defaults): --resume refuses those that disagree."""
    given = set()
    for name in ctx.params:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            given.add(name)
    return frozenset(given)


_SPZ_AXES_HELP = "Frame of .spz files: rdf (as the .ply; splat-transform 3.x) | rub (y-up; 2.x)"
_SPZ_CHECK_HELP = "Fail unless the .spz is this version (0: any)."


@app.command()
def render(
    scene: Path = typer.Argument(..., help="Scene file (.ply, .splat, .spz)."),
    output: Path = typer.Option(
        ..., "--output", "-o", help="PNG to write (several cameras: name_000.png, ...)."
    ),
    camera: str = typer.Option("single", "--camera", "-c", help="single | stage | 360 | orbit | PATH.json"),
    width: int = typer.Option(512, "--width"),
    height: int = typer.Option(384, "--height"),
    depth_png: bool = typer.Option(False, "--depth", help="Also write a depth visualisation."),
    spz_axes: str = typer.Option("rdf", "--spz-axes", help=_SPZ_AXES_HELP),
    spz_version: int = typer.Option(0, "--spz-version", help=_SPZ_CHECK_HELP),
    device: str = typer.Option("auto", "--device", help="auto (cuda when available) | cpu | cuda | cuda:N"),
) -> None:
    """Render a saved scene from a trajectory or a JSON camera path to PNG."""
    from engine.tools.export import read_options
    from engine.tools.render import render_scene_to_png

    options = read_options(scene, spz_axes, spz_version)
    for written in render_scene_to_png(scene, output, camera, width, height, depth_png, options, device):
        typer.echo(str(written))


@app.command()
def check(
    run: Path = typer.Argument(..., help="Run directory of stitch generate."),
    save: bool = typer.Option(True, "--save/--no-save", help="Store the report in the run's manifest."),
) -> None:
    """Outcome table of a run: per view brightness, colour, seams, repetition, detail, depth; holes."""
    from engine.outcome import check_run

    typer.echo(check_run(run, save=save))


@app.command()
def info(
    scene: Path = typer.Argument(..., help="Scene file (.ply, .splat, .spz)."),
    spz_axes: str = typer.Option("rdf", "--spz-axes", help=_SPZ_AXES_HELP),
    spz_version: int = typer.Option(0, "--spz-version", help=_SPZ_CHECK_HELP),
) -> None:
    """Print what a scene file holds: count, SH degree, bounds, size (a .spz: version and frame read in)."""
    from engine.tools.export import read_options
    from splat.formats.io import scene_info

    for key, value in scene_info(scene, read_options(scene, spz_axes, spz_version)["axes"]).items():
        typer.echo(f"{key}: {value}")


@app.command()
def export(
    scene: Path = typer.Argument(..., help="Scene file to convert, or a run directory with --mesh."),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Target: .ply, .splat or .spz; with --mesh .glb, .obj or .ply."
    ),
    spz_axes: str = typer.Option("rdf", "--spz-axes", help=_SPZ_AXES_HELP),
    spz_version: int = typer.Option(2, "--spz-version", help="The .spz version written: 2 (all) or 3."),
    mesh: bool = typer.Option(False, "--mesh", help="Fuse a run's depth maps + images into a mesh (TSDF)."),
    voxel_size: float = typer.Option(0.0, "--voxel-size", help="Voxel size, m (0: auto)."),
    truncation: float = typer.Option(0.0, "--truncation", help="TSDF truncation, metres (0: 4 voxels)."),
    depth_trunc: float = typer.Option(0.0, "--depth-trunc", help="Ignore depth beyond, m (0: none)."),
    max_vertices: int = typer.Option(500_000, "--max-vertices", help="Vertex budget (coarser if over)."),
    mesh_axes: str = typer.Option("rub", "--mesh-axes", help="rub: y-up (glTF, Blender) | rdf: as the .ply"),
) -> None:
    """Convert a scene between .ply, .splat and .spz, or fuse a run directory into a mesh (--mesh)."""
    from engine.tools.export import export_mesh, export_scene

    if mesh:
        options = {"voxel_size": voxel_size, "truncation": truncation, "depth_trunc": depth_trunc}
        typer.echo(export_mesh(scene, output, max_vertices=max_vertices, axes=mesh_axes, **options))
        return
    typer.echo(export_scene(scene, output, spz_axes, spz_version))


@app.command()
def view(
    scene: Path = typer.Argument(..., help="Scene file (.ply, .splat, .spz) or a run directory."),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address (default: this machine only)."),
    port: int = typer.Option(8080, "--port", help="Port (the next free one if busy)."),
    spz_axes: str = typer.Option("rdf", "--spz-axes", help=_SPZ_AXES_HELP),
    spz_version: int = typer.Option(0, "--spz-version", help=_SPZ_CHECK_HELP),
) -> None:
    """Inspect a scene in the browser: fly to generation cameras, record a camera path (JSON for --path)."""
    from engine.tools.export import read_options
    from viewer.saved import serve_saved

    serve_saved(scene, host=host, port=port, spz_axes=read_options(scene, spz_axes, spz_version)["axes"])


@app.command()
def extend(
    run_dir: Path = typer.Argument(..., help="A finished run directory of stitch generate."),
    path: Path | None = typer.Option(None, "--path", help="Camera path JSON with the views to add."),
    yaw: float | None = typer.Option(None, "--yaw", help="One camera: yaw in degrees (positive: right)."),
    pitch: float | None = typer.Option(None, "--pitch", help="One camera: pitch in degrees (positive: up)."),
    move: str | None = typer.Option(None, "--move", help="One camera: position X,Y,Z in metres."),
    prompt: str | None = typer.Option(
        None, "--prompt", "-p", help="Prompt for the views (default: the run's)."
    ),
    undo: bool = typer.Option(False, "--undo", help="Remove the last added view instead."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Grow a finished run by more views (as the viewer's Stitch here); run again to finish a killed one."""
    from engine.extend.grow import run_extend_cli

    for line in run_extend_cli(run_dir, path, yaw, pitch, move, prompt, undo, quiet):
        typer.echo(line)


_EXECUTOR_HELP = "inline (this process) | local (submitit subprocesses) | slurm (submitit job array)"
# Executor flags shared by `batch` and `bench geometry` (typer options can be reused as defaults).
_PARTITION = typer.Option("", "--partition", help="SLURM partition.")
_ACCOUNT = typer.Option("", "--account", help="SLURM account.")
_QOS = typer.Option("", "--qos", help="SLURM quality of service.")
_GPUS = typer.Option(0, "--gpus", help="GPUs per job.")
_TIME = typer.Option("4:00:00", "--time", help="Time limit per job (requeued when reached).")
_MEM = typer.Option(16, "--mem", help="Memory per job, GB.")
_CPUS = typer.Option(4, "--cpus", help="CPUs per job.")
_RETRIES = typer.Option(2, "--retries", help="Resubmit jobs that died this many times.")
_DRY_RUN = typer.Option(False, "--dry-run", help="Print the sbatch script, submit nothing.")


def _cluster(executor, shards, partition, account, qos, gpus, time_limit, mem, cpus, retries, folder):
    """Executor flags shared by `batch` and `bench geometry` -> engine.cluster.ClusterOptions."""
    from engine.cluster import ClusterOptions, parse_time

    return ClusterOptions(
        executor=executor, shards=shards, folder=folder, partition=partition or None, account=account or None,
        qos=qos or None, gpus=gpus, time_min=parse_time(time_limit), mem_gb=mem, cpus=cpus, retries=retries,
    )  # fmt: skip


def _dry_run(opts, n_tasks: int, folder: Path) -> None:
    """Print the sbatch script submitit would submit (and keep a copy), submit nothing."""
    from engine.cluster import write_dry_run

    script = write_dry_run(opts, n_tasks, folder)
    typer.echo(script)
    typer.echo(f"# {n_tasks} array task(s); written to {folder / 'array.sbatch'}; nothing submitted")


@bench_app.command("geometry")
def bench_geometry(
    data_dir: Path = typer.Argument(..., help="RGB-D folder with poses, or a root of many (3 levels)."),
    output: Path = typer.Option(Path("bench-geometry"), "--output", "-o", help="Results folder (resumable)."),
    gap: int | None = typer.Option(
        None, "--gap", help="Frame gap j - i in files (default: 10 recorded frames, <= half the sequence)."
    ),
    max_pairs: int | None = typer.Option(None, "--max-pairs", help="At most this many pairs per sequence."),
    methods: str = typer.Option("", "--methods", help="Comma-separated names (default: all)."),
    seed: int = typer.Option(0, "--seed", help="Pair selection seed."),
    no_sweep: bool = typer.Option(False, "--no-sweep", help="Skip the extra gaps of the MAE-vs-gap figure."),
    min_coverage: float = typer.Option(0.0, "--min-coverage", help="Skip pairs covered less (Hypersim: 0.8)"),
    protocol: str = typer.Option(
        "default", "--protocol", help="default | scannet (j=i+10, every 50th, 50 scenes) | hypersim | auto"
    ),
    executor: str = typer.Option("inline", "--executor", help=_EXECUTOR_HELP),
    shards: int = typer.Option(1, "--shards", help="Jobs to split the sequences over."),
    partition: str = _PARTITION,
    account: str = _ACCOUNT,
    qos: str = _QOS,
    gpus: int = _GPUS,
    time_limit: str = _TIME,
    mem: int = _MEM,
    cpus: int = _CPUS,
    retries: int = _RETRIES,
    dry_run: bool = _DRY_RUN,
) -> None:
    """Score depth completion on real RGB-D ground truth (uncovered pixels of frame j given frame i)."""
    from engine.bench.geometry import run_geometry_benchmark
    from engine.bench.geometry_config import BenchConfig

    names = [m.strip() for m in methods.split(",") if m.strip()] or None
    folder = output / "submitit"
    cluster = _cluster(
        executor, shards, partition, account, qos, gpus, time_limit, mem, cpus, retries, folder
    )
    if dry_run:
        from engine.bench.sequences import discover_sequences

        n = len(discover_sequences(data_dir, log=lambda s: None))
        return _dry_run(cluster, min(shards, n), folder)
    config = BenchConfig(sweep_gaps=not no_sweep, min_coverage=min_coverage, protocol=protocol)
    log = lambda s: typer.echo(s, err=True)  # noqa: E731  (progress on stderr, the table on stdout)
    table = run_geometry_benchmark(data_dir, output, names, gap, max_pairs, seed, config, log, cluster)
    typer.echo(table.markdown())
    typer.echo(f"results in {output} (summary.md, summary.csv, results.csv, figure.png)")


@app.command()
def batch(
    jobs: Path = typer.Argument(..., help="CSV/JSONL (photo, prompt, mode, seed, ...) or a photo folder."),
    output: Path = typer.Option(Path("batch"), "--output", "-o", help="Output root (runs/, batch.csv)."),
    prompt: str = typer.Option("", "--prompt", "-p", help="Prompt for rows without one."),
    mode: str = typer.Option("stage", "--mode", "-m", help="Mode for rows without one."),
    seed: int = typer.Option(0, "--seed", help="Seed for rows without one."),
    max_side: int = typer.Option(384, "--max-side", help="Longest image side for rows without one."),
    steps: int = typer.Option(-1, "--steps", help="Optimisation steps per view (-1: the preset's)."),
    preset: str = typer.Option("offline", "--preset", help="offline | paper | fast"),
    executor: str = typer.Option("local", "--executor", help=_EXECUTOR_HELP),
    shards: int = typer.Option(1, "--shards", help="Jobs to split the rows over (SLURM: array tasks)."),
    partition: str = _PARTITION,
    account: str = _ACCOUNT,
    qos: str = _QOS,
    gpus: int = _GPUS,
    time_limit: str = _TIME,
    mem: int = _MEM,
    cpus: int = _CPUS,
    retries: int = _RETRIES,
    dry_run: bool = _DRY_RUN,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Generate many scenes: a resumable run directory per row, an index (batch.csv/json), a contact sheet."""
    from engine.tools.batch import run_batch
    from engine.tools.batch_jobs import BatchDefaults, read_jobs

    defaults = BatchDefaults(
        prompt=prompt, mode=mode, seed=seed, max_side=max_side, steps=steps, preset=preset
    )
    folder = output / "submitit"
    cluster = _cluster(
        executor, shards, partition, account, qos, gpus, time_limit, mem, cpus, retries, folder
    )
    if dry_run:
        return _dry_run(cluster, min(shards, len(read_jobs(jobs, defaults))), folder)
    log = lambda s: typer.echo(s, err=True)  # noqa: E731
    report = run_batch(jobs, output, defaults, cluster, log=log, progress=not quiet)
    if report.failed:
        typer.echo(f"error: {len(report.failed)} of {len(report.rows)} rows did not finish (see above and "
                   f"{report.index_csv}); run the same command again to retry them", err=True)  # fmt: skip
        sys.exit(1)


# --- stitch models: the model registry on the command line -----------------------------------------


@models_app.command("list")
def list_models() -> None:
    """Every registry entry: key, hub id, revision, kind, licence, size, which backend uses it."""
    from engine.backends import model_registry

    for spec in model_registry.REGISTRY.values():
        typer.echo(f"{spec.key}  {spec.repo_id}@{spec.revision}  [{spec.kind}]")
        typer.echo(f"    licence: {spec.licence}; size: {spec.size}")
        typer.echo(f"    used by: {spec.used_by}{'  (optional)' if spec.optional else ''}")
        if spec.vanished:
            typer.echo(f"    vanished from the hub (found in a local cache only): {', '.join(spec.vanished)}")
        typer.echo(f"    mirrors: set {spec.env_var()}=org/name[,org/name]")


@models_app.command("check")
def check_models(
    names: list[str] = typer.Argument(None, help="Registry keys or hub ids (default: all)."),
    model_path: Path | None = typer.Option(None, "--model-path", help="Local models root to search too."),
    preset: str = typer.Option("", "--preset", help="Check only what this preset needs (e.g. paper)."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 if any checked model is missing."),
) -> None:
    """Per model: are its weights available offline (--model-path, STITCH_MODEL_PATH, the HF cache)?"""
    from engine.backends import models

    if preset:
        from engine.backends.registry import preset_backends, required_models

        names = [*(names or []), *required_models(*preset_backends(preset))]
        if not names:
            typer.echo(f"preset {preset} needs no model weights")
            return
    missing = 0
    for spec, found, _reason in models.check(names or None, model_path=model_path):
        if found is not None:
            where = found.commit[:12] if found.commit else found.fingerprint or ""
            rid = found.repo_id or spec.repo_id
            typer.echo(f"ok       {spec.key:26s} {rid}  {found.source}: {found.path} {where}")
        else:
            missing += 1
            tag = "optional" if spec.optional and not names else "missing "
            typer.echo(f"{tag} {spec.key:26s} {spec.repo_id}  -> stitch models download {spec.key}")
    if missing and strict:
        raise typer.Exit(1)


@models_app.command("download")
def download_models(
    names: list[str] = typer.Argument(None, help="Registry keys or hub ids (org/name[@revision])."),
    preset: str = typer.Option("", "--preset", help="Everything this preset needs (e.g. paper)."),
    to: Path | None = typer.Option(
        None,
        "--to",
        help="Models root to write DIR/<org>/<name> (then: --model-path DIR); default: the HF cache.",
    ),
    revision: str | None = typer.Option(
        None, "--revision", help="Branch, tag or commit (default: the registry's)."
    ),
    repo_id: str | None = typer.Option(None, "--repo-id", help="Fetch from this mirror repository instead."),
) -> None:
    """Download weights with huggingface_hub (on a connected machine; HF_ENDPOINT and HF_TOKEN honoured)."""
    from engine.backends import models

    wanted = list(names or [])
    if preset:
        from engine.backends.registry import preset_backends, required_models

        wanted += required_models(*preset_backends(preset))
    if not wanted:
        raise StitchError("name a model (`stitch models list`) or --preset paper")
    for name in dict.fromkeys(wanted):
        base, _, rev = name.partition("@") if "@" in name else (name, "", "")
        path, rid = models.download(base, revision=rev or revision, to=to, repo_id=repo_id)
        typer.echo(f"{base}: {rid} -> {path}")


def _one_line(text: str, limit: int = 600) -> str:
    """Errors are one line on stderr even when a library's message spans several."""
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _click_exception_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(usage errors, aborts) of click and of the click copy that newer typer versions ship inside."""
    import click

    usage: list[type] = [click.ClickException]
    aborts: list[type] = [click.exceptions.Abort, typer.Abort]
    try:
        from typer._click import exceptions as vendored  # typer >= 0.17 vendors click
    except ImportError:
        pass
    else:
        usage.append(vendored.ClickException)
        aborts += [getattr(vendored, "Abort", typer.Abort)]
    return tuple(usage), tuple(aborts)


@app.command()
def refine(
    run_dir: Path = typer.Argument(..., help="A finished run directory of stitch generate."),
    steps: int = typer.Option(1000, "--steps", help="Optimisation steps (one view each)."),
    strategy: str = typer.Option("auto", "--strategy", help="auto | cpu | default | mcmc | none"),
    budget: int | None = typer.Option(None, "--budget", help="Most Gaussians (default 1.25x CPU, 2x CUDA)."),
    depth_weight: float = typer.Option(0.05, "--depth-weight", help="Depth supervision weight (0: off)."),
    pose_refine: bool = typer.Option(False, "--pose-refine", help="Learn a small pose fix per view."),
    checkpoint_every: int = typer.Option(100, "--checkpoint-every", help="Save resumable state every N."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    restart: bool = typer.Option(False, "--restart", help="Discard a saved refinement and start over."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Re-optimise a finished run (densify, prune, sharpen); writes refined.ply, quality.json. Resumable."""
    from engine.tools.refine import RefineConfig, RefineProgress, refine_run

    config = RefineConfig(
        steps=steps, strategy=strategy, budget=budget, depth_weight=depth_weight, pose_refine=pose_refine,
        checkpoint_every=checkpoint_every, seed=seed, device=device,
    )  # fmt: skip
    try:
        result = refine_run(run_dir, config, restart=restart, progress=None if quiet else RefineProgress())
    except KeyboardInterrupt:
        typer.echo(f"interrupted; progress is saved, run the same command to continue ({run_dir})", err=True)
        sys.exit(130)
    gain = result.report["gain_db"]
    typer.echo(f"{result.ply}  {result.report_path}")
    typer.echo(
        f"PSNR gain: generation views {gain['generation_views']:+.2f} dB, "
        f"held-out cameras {gain['held_out_cameras']:+.2f} dB"
    )


@app.command()
def video(
    source: Path = typer.Argument(..., help="Run directory (refined.ply if present) or scene file."),
    output: Path = typer.Option(Path("flythrough.mp4"), "--output", "-o", help=".mp4, .gif or a folder."),
    path: Path | None = typer.Option(None, "--path", help="Keyframe camera path JSON (default: the run's)."),
    frames: int = typer.Option(120, "--frames", help="Number of frames."),
    fps: int = typer.Option(30, "--fps"),
    width: int | None = typer.Option(None, "--width", help="Frame width (default: the cameras')."),
    device: str = typer.Option("auto", "--device", help="auto (cuda when available) | cpu | cuda | cuda:N"),
) -> None:
    """Render a smooth fly-through through the generation cameras (or --path) to a video."""
    from engine.tools.video import make_video

    video_file = make_video(source, output, path=path, frames=frames, fps=fps, width=width, device=device)
    typer.echo(str(video_file))


def _command() -> str:
    """The subcommand on the command line (first word that is not an option), or ''."""
    return next((a for a in sys.argv[1:] if not a.startswith("-")), "")


def _interrupted_message() -> str:
    """Only generate continues with --resume; viewers and renders just stop."""
    if _command() == "generate":
        return "interrupted; finished views are saved, continue with --resume RUN_DIR"
    return "interrupted"


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    usage_errors, aborts = _click_exception_types()
    try:
        code = app(standalone_mode=False, prog_name="stitch")
    except StitchError as error:
        typer.echo(f"error: {_one_line(str(error))}", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, *aborts):
        typer.echo(_interrupted_message(), err=True)
        sys.exit(130)
    except MemoryError:  # a size cap missed something: still one line, not a traceback
        typer.echo("error: out of memory; use a smaller input (photo, scene, --frames, --width)", err=True)
        sys.exit(2)
    except usage_errors as error:  # unknown option, bad integer, missing argument: one line, no usage box
        message = error.format_message() if hasattr(error, "format_message") else str(error)
        ctx = getattr(error, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        if message.strip():  # empty: `stitch` alone, the help was just printed
            typer.echo(f"error: {_one_line(message)}{hint}", err=True)
        sys.exit(getattr(error, "exit_code", 2))
    except OSError as error:  # disk full, permissions: name the file and stop cleanly
        where = error.filename or "file system"
        then = ", then --resume" if _command() == "generate" else ", then run the command again"
        typer.echo(
            f"error: {_one_line(str(error.strerror or error))} ({_one_line(str(where))}); "
            f"free space or fix permissions{then}",
            err=True,
        )
        sys.exit(2)
    if code == 130:  # typer turns Ctrl-C into exit code 130 without a word
        typer.echo(_interrupted_message(), err=True)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
