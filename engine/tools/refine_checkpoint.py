"""`stitch refine`'s resumable state in RUN_DIR/refine/: the trainer's tensors and a state.json."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from engine.rundir import atomic_write_json
from splat.errors import StitchError


class RefineCheckpoint:
    """RUN_DIR/refine/: trainer.safetensors (tensors) + state.json (step, config, rng, report so far)."""

    def __init__(self, root: Path) -> None:
        self.dir = Path(root) / "refine"

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    def load(self) -> tuple[dict | None, dict[str, torch.Tensor] | None]:
        if not self.state_path.is_file():
            return None, None
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
            if not isinstance(state, dict):
                raise ValueError("state.json is not a JSON object")
            name = state["tensors"]
            # Only our own file name inside refine/: a hand-edited state.json must not point elsewhere.
            if not (isinstance(name, str) and re.fullmatch(r"trainer_\d{6,}\.safetensors", name)):
                raise ValueError(f"state.json names {name!r}, not a trainer_XXXXXX.safetensors file")
            tensors = load_file(str(self.dir / name))
        except (OSError, ValueError, KeyError, TypeError, RecursionError, SafetensorError) as exc:
            raise StitchError(
                f"refine checkpoint in {self.dir} is damaged ({exc}); rerun with --restart"
            ) from exc
        return state, tensors

    def save(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"trainer_{state['step']:06d}.safetensors"
        tmp = self.dir / f".{name}.tmp{os.getpid()}"
        try:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
            tmp.replace(self.dir / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        atomic_write_json(self.state_path, {**state, "tensors": name})
        for old in self.dir.glob("trainer_*.safetensors"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def clear(self) -> None:
        for path in self.dir.glob("*"):
            if path.is_file():
                path.unlink()
