"""Where a saved completion model lives: a local save_pretrained folder, or a Hugging Face hub id downloaded
(or found in the cache) to one."""

from __future__ import annotations

import os
from pathlib import Path

from completion.network.config import CONFIG_NAME, WEIGHTS_NAME
from splat.errors import ModelUnavailableError


def resolve_folder(
    path_or_id: str | Path,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """A local folder holding config.json + model.safetensors, downloading from the hub when given an id."""
    p = Path(path_or_id).expanduser()
    if p.is_dir():
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (p / name).is_file():
                raise ModelUnavailableError(
                    f"{p} has no {name}; give a folder written by DepthCompletionModel.save_pretrained"
                )
        return p
    if p.exists() or str(path_or_id).startswith((".", "/", "~")) or str(path_or_id).count("/") > 1:
        raise ModelUnavailableError(
            f"completion model {path_or_id} is not a folder with {CONFIG_NAME} + {WEIGHTS_NAME}; check it"
        )
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if local_files_only is None:  # read HF_HUB_OFFLINE now (huggingface_hub reads it once, at import)
        local_files_only = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    try:
        files = [
            hf_hub_download(
                str(path_or_id),
                name,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=bool(local_files_only),
            )
            for name in (CONFIG_NAME, WEIGHTS_NAME)
        ]
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelUnavailableError(
            f"completion model {path_or_id!r} is not available offline ({exc.__class__.__name__}); "
            f"run `stitch models download {path_or_id}` on a connected machine or pass a local folder"
        ) from exc
    return Path(files[0]).parent
