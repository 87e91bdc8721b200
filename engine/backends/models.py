"""Where a learned backend's weights are on this machine; one-line errors when they are missing or damaged.

Every learned backend loads its weights from a *local* path that this module resolves first, so loading never
touches the network by surprise:

1. a local folder (or file) given directly (`--outpainter ./my-sd2`, `--depth mono:./dpt`);
2. a models root given with `--model-path DIR` (or `STITCH_MODEL_PATH`, `os.pathsep`-separated), holding
   `DIR/<org>/<name>` (what `stitch models download --to DIR` writes), `DIR/<name>`, `DIR/<org>--<name>` or
   `DIR/<registry key>`; DIR may also be the model folder itself;
3. the Hugging Face cache (`HF_HUB_CACHE`), looked up with `local_files_only=True`, for the default id, its
   configured mirrors and former ids that have since vanished from the hub (a copy cached before still works);
4. only when the caller allows it (`allow_download=True`, `stitch models download`) and `HF_HUB_OFFLINE` is
   not set: a download with `huggingface_hub`.

The registry itself (keys, hub ids, mirrors, licences) is engine/backends/model_registry.py.

Mirrors: `STITCH_MIRROR_<KEY>` (key upper-cased, `-` -> `_`, e.g. `STITCH_MIRROR_SD2_INPAINTING=org/name`,
comma-separated for several) puts repositories in front of the registry's own list; `HF_ENDPOINT` points
`huggingface_hub` at a hub mirror. A model that cannot be found raises `ModelUnavailableError` with one line
naming the id, `stitch models download KEY` and `--model-path DIR`, and the fallback `--preset offline`.

Revisions are pinned to "main": commit hashes of the hub repositories cannot be looked up from these offline
machines. The commit actually used is recorded from the cache's snapshot folder when the weights come from the
cache; local folders are recorded with a fingerprint of their file names, sizes and configs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.backends.model_registry import REGISTRY, ModelSpec, adhoc_spec, lookup
from splat.errors import ModelUnavailableError, StitchError


def is_offline() -> bool:
    """HF_HUB_OFFLINE, read now (huggingface_hub reads it once at import)."""
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().upper() in {"1", "ON", "YES", "TRUE"}
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def model_path_roots(model_path: str | Path | list | tuple | None = None) -> list[Path]:
    """`--model-path` roots plus STITCH_MODEL_PATH ones, in that order."""
    roots: list[Path] = []
    if isinstance(model_path, (list, tuple)):
        roots += [Path(p).expanduser() for p in model_path]
    elif model_path:
        roots.append(Path(model_path).expanduser())
    roots += [Path(p).expanduser() for p in os.environ.get("STITCH_MODEL_PATH", "").split(os.pathsep) if p]
    return roots


def looks_like(path: Path, kind: str, filename: str | None = None) -> bool:
    """Does `path` hold a model of `kind` (cheap file checks only)?"""
    path = Path(path)
    if filename is not None:
        return (path.is_file() and path.name == filename) or (path / filename).is_file()
    if not path.is_dir():
        return False
    if kind in ("diffusers-inpaint", "diffusers-pipeline"):
        return (path / "model_index.json").is_file()
    if kind == "completion-checkpoint":
        return any(path.glob("*.pt"))
    return (path / "config.json").is_file()


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's weights are on this machine, and what to record about them in the run manifest."""

    requested: str  # what the caller asked for: key, hub id or path
    path: Path  # local folder; for single-file models the file itself
    source: str  # "local" | "model-path" | "hf-cache" | "download"
    repo_id: str | None = None  # hub id the weights come from (None for a plain local folder)
    revision: str | None = None  # revision asked for
    commit: str | None = None  # snapshot commit when found in the HF cache
    key: str | None = None  # registry key
    licence: str | None = None
    fingerprint: str | None = None  # local folders: hash of file names, sizes and json configs
    extra: dict = field(default_factory=dict)

    def to_manifest(self) -> dict:
        return {
            "requested": self.requested,
            "key": self.key,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
            "source": self.source,
            "path": str(self.path),
            "licence": self.licence,
            "fingerprint": self.fingerprint,
        }


def fingerprint(path: Path, max_files: int = 2000) -> str:
    """Cheap identity of a local model: relative names and sizes of its files plus its json files' text."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())[:max_files]
    for f in files:
        rel = f.name if f == path else str(f.relative_to(path))
        h.update(f"{rel}\0{f.stat().st_size}\0".encode())
        if f.suffix == ".json" and f.stat().st_size < 1_000_000:
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _commit_of(path: Path) -> str | None:
    """The snapshot commit hash of a path inside the HF cache (`.../snapshots/<hash>/...`)."""
    parts = Path(path).parts
    if "snapshots" in parts:
        i = parts.index("snapshots")
        if i + 1 < len(parts) and re.fullmatch(r"[0-9a-f]{40}", parts[i + 1]):
            return parts[i + 1]
    return None


def _local_candidates(root: Path, spec: ModelSpec) -> list[Path]:
    out = [root]
    for rid in spec.hub_candidates(include_vanished=True):
        org, _, name = rid.partition("/")
        out += [root / rid, root / (name or org), root / rid.replace("/", "--")]
    out.append(root / spec.key)
    return list(dict.fromkeys(out))


def _finish(spec: ModelSpec, path: Path, filename: str | None) -> Path:
    if filename is not None and path.is_dir():
        return path / filename
    return path


def find_in_model_path(spec: ModelSpec, roots: list[Path]) -> Path | None:
    for root in roots:
        for cand in _local_candidates(root, spec):
            if looks_like(cand, spec.kind, spec.filename):
                return _finish(spec, cand, spec.filename)
    return None


def find_in_cache(spec: ModelSpec, revision: str | None = None, cache_dir: str | Path | None = None):
    """(path, repo_id) of a cached copy (local_files_only lookups; vanished ids included) or None."""
    from huggingface_hub import hf_hub_download, snapshot_download

    rev = revision or spec.revision
    for rid in spec.hub_candidates(include_vanished=True):
        try:
            if spec.filename is not None:
                p = Path(
                    hf_hub_download(
                        rid, spec.filename, revision=rev, cache_dir=cache_dir, local_files_only=True
                    )
                )
            else:
                p = Path(snapshot_download(rid, revision=rev, cache_dir=cache_dir, local_files_only=True))
        except Exception:  # not cached (LocalEntryNotFoundError), invalid id (HFValidationError), ...
            continue
        if looks_like(p, spec.kind, spec.filename):
            return p, rid
    return None


def unavailable_message(spec: ModelSpec, reason: str = "") -> str:
    why = f" ({reason})" if reason else ""
    return (
        f"model {spec.repo_id!r} for {spec.used_by or spec.kind} is not available on this machine{why}: "
        f"run `stitch models download {spec.key}` on a connected machine, or pass --model-path DIR with its "
        "files; without weights use --preset offline (classical backends)"
    )


def resolve(
    name: str,
    *,
    kind: str | None = None,
    revision: str | None = None,
    model_path: str | Path | list | None = None,
    cache_dir: str | Path | None = None,
    allow_download: bool = False,
) -> ResolvedModel:
    """Find a model's weights locally (see module doc for the order) -> ResolvedModel; never loads them.

    name: registry key, hub id, or local path. kind: needed for ids outside the registry."""
    p = Path(name).expanduser()
    spec = lookup(name)
    if spec is None and p.exists():
        if p.is_dir() and not any(p.iterdir()):
            raise ModelUnavailableError(f"model folder {p} is empty; copy the model's files into it")
        return ResolvedModel(requested=name, path=p, source="local", fingerprint=fingerprint(p))
    if spec is None:
        if name.startswith((".", "/", "~")) or name.count("/") != 1:
            raise ModelUnavailableError(
                f"model {name!r} is neither an existing local path nor a hub id (org/name) nor a registry key"
                f" ({', '.join(REGISTRY)}); check the spelling or the path"
            )
        if kind is None:
            raise StitchError(f"resolve({name!r}) needs kind= for a hub id outside the registry")
        spec = adhoc_spec(name, kind, revision)
    rev = revision or spec.revision
    roots = model_path_roots(model_path)
    found = find_in_model_path(spec, roots)
    if found is not None:
        return ResolvedModel(
            requested=name,
            path=found,
            source="model-path",
            repo_id=spec.repo_id,
            revision=rev,
            key=spec.key if spec.key in REGISTRY else None,
            licence=spec.licence,
            fingerprint=fingerprint(found),
        )
    cached = find_in_cache(spec, rev, cache_dir)
    if cached is not None:
        path, rid = cached
        return ResolvedModel(
            requested=name,
            path=path,
            source="hf-cache",
            repo_id=rid,
            revision=rev,
            commit=_commit_of(path),
            key=spec.key if spec.key in REGISTRY else None,
            licence=spec.licence,
        )
    if allow_download and not is_offline():
        path, rid = download(spec, revision=rev, cache_dir=cache_dir)
        return ResolvedModel(
            requested=name,
            path=_finish(spec, path, spec.filename),
            source="download",
            repo_id=rid,
            revision=rev,
            commit=_commit_of(path),
            key=spec.key if spec.key in REGISTRY else None,
            licence=spec.licence,
        )
    reason = "HF_HUB_OFFLINE is set" if allow_download else "not in --model-path or the Hugging Face cache"
    if roots:
        reason += f"; searched {', '.join(str(r) for r in roots)}"
    raise ModelUnavailableError(unavailable_message(spec, reason))


def download(
    spec_or_name: ModelSpec | str,
    *,
    revision: str | None = None,
    to: str | Path | None = None,
    cache_dir: str | Path | None = None,
    repo_id: str | None = None,
    kind: str = "diffusers-pipeline",
) -> tuple[Path, str]:
    """Fetch a model with huggingface_hub -> (local folder or file, repo id used).

    to: a models root; files go to `to/<org>/<name>`, which `--model-path to` then finds. Without it the HF
    cache is used. repo_id: fetch from this mirror instead of the registry's candidates."""
    from huggingface_hub import hf_hub_download, snapshot_download

    spec = spec_or_name if isinstance(spec_or_name, ModelSpec) else lookup(spec_or_name)
    if spec is None:
        spec = adhoc_spec(str(spec_or_name), kind, revision)
    if is_offline():
        raise ModelUnavailableError(
            f"cannot download {spec.repo_id!r}: HF_HUB_OFFLINE is set; unset it on a connected machine "
            f"or copy the files there and pass --model-path DIR"
        )
    rev = revision or spec.revision
    candidates = [repo_id] if repo_id else spec.hub_candidates()
    errors = []
    for rid in candidates:
        local_dir = Path(to).expanduser() / rid if to is not None else None
        try:
            if spec.filename is not None:
                path = hf_hub_download(
                    rid, spec.filename, revision=rev, cache_dir=cache_dir, local_dir=local_dir
                )
            else:
                path = snapshot_download(
                    rid,
                    revision=rev,
                    cache_dir=cache_dir,
                    local_dir=local_dir,
                    ignore_patterns=list(spec.ignore_patterns) or None,
                )
            return Path(path), rid
        except Exception as exc:  # connection, missing repo, auth: try the next mirror
            errors.append(f"{rid}: {exc.__class__.__name__}")
    raise ModelUnavailableError(
        f"could not download {spec.key!r} ({'; '.join(errors)}); check the connection, set a mirror with "
        f"{spec.env_var()}=org/name or HF_ENDPOINT, or copy the files and pass --model-path DIR"
    )


def check(
    names: list[str] | None = None,
    *,
    model_path: str | Path | list | None = None,
    cache_dir: str | Path | None = None,
) -> list[tuple[ModelSpec, ResolvedModel | None, str]]:
    """Offline availability of registry models -> [(spec, resolved or None, reason)]; never downloads."""
    specs = []
    for n in names or list(REGISTRY):
        spec = lookup(n)
        if spec is None:
            raise StitchError(f"unknown model {n!r}; `stitch models list` shows the registry keys")
        specs.append(spec)
    out = []
    for spec in specs:
        try:
            out.append((spec, resolve(spec.key, model_path=model_path, cache_dir=cache_dir), ""))
        except ModelUnavailableError as exc:
            out.append((spec, None, str(exc)))
    return out


@contextlib.contextmanager
def model_load_errors(role: str, models: Sequence[ResolvedModel] = ()) -> Iterator[None]:
    """Turn what loaders raise on damaged weights into one StitchError line that names the model.

    Truncated or corrupt safetensors (SafetensorError), pickles that weights_only=True refuses
    (UnpicklingError), state dicts of the wrong shape (RuntimeError), configs of the wrong type (TypeError,
    KeyError) and unreadable files (OSError) all end up here; StitchErrors pass through unchanged."""
    try:
        yield
    except StitchError:
        raise
    except (OSError, ValueError, RuntimeError, TypeError, KeyError, EOFError, AttributeError) as exc:
        if _out_of_memory(exc):  # torch.cuda.OutOfMemoryError is a RuntimeError: not a damaged file
            raise _memory_error(role, models, exc) from exc
        raise _load_error(role, models, exc) from exc
    except Exception as exc:  # SafetensorError and pickle.UnpicklingError derive from Exception only
        if type(exc).__name__ not in ("SafetensorError", "UnpicklingError"):
            raise
        raise _load_error(role, models, exc) from exc


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text or "cuda oom" in text


def _memory_error(role: str, models: Sequence[ResolvedModel], exc: BaseException) -> StitchError:
    where = ", ".join(str(m.path) for m in models) or "(no model)"
    return StitchError(
        f"out of GPU memory while loading the {role} model {where}: free the GPU (other processes), or pass "
        "--cpu-offload and --attention-slicing (diffusion), or run with --device cpu"
    )


def _load_error(role: str, models: Sequence[ResolvedModel], exc: BaseException) -> StitchError:
    where = ", ".join(str(m.path) for m in models) or "(no model)"
    reason = " ".join(str(exc).split())  # one line, whatever the library wrote
    if len(reason) > 240:
        reason = reason[:237] + "..."
    return StitchError(
        f"cannot load the {role} model {where} ({type(exc).__name__}: {reason}); the weight files are "
        "damaged or do not match their config: re-download them (stitch models download) or re-save the model"
    )
