"""`stitch models list|check|download`: the model registry on the command line (registered in cli.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from engine.backends import model_registry, models
from splat.errors import StitchError

models_app = typer.Typer(
    help="Model registry: list the learned backends' weights, check what is available offline, download.",
    no_args_is_help=True,
)


@models_app.command("list")
def list_models() -> None:
    """Every registry entry: key, hub id, revision, kind, licence, size, which backend uses it."""
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
