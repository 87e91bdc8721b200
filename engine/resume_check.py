"""`generate --resume` continues a run with the settings it started with: a disagreeing flag is refused."""

from __future__ import annotations

from pathlib import Path

from engine.config import GenerateConfig
from engine.images import file_sha256
from splat.errors import StitchError

# CLI flag -> how to read its value from a GenerateConfig (for --resume's settings check).
_RESUME_FLAGS = {
    "prompt": lambda c: c.prompt,
    "mode": lambda c: c.mode,
    "path": lambda c: c.path,
    "seed": lambda c: c.seed,
    "max_side": lambda c: c.max_side,
    "depth": lambda c: c.depth_file,
    "steps": lambda c: c.optim.steps_per_view,
    "preset": lambda c: c.preset,
    "outpainter": lambda c: c.outpainter,
    "depth_backend": lambda c: c.depth_backend,
    "model_path": lambda c: c.model_path,
    "outpaint_steps": lambda c: c.outpaint_steps,
    "max_gaussians": lambda c: c.fusion.max_gaussians,
}


def refuse_changed_settings(
    asked: GenerateConfig, run: GenerateConfig, manifest: dict, explicit: frozenset[str]
) -> None:
    """--resume continues a run with the settings it started with: a flag given on the command line that
    disagrees with them is refused (it used to be silently ignored)."""
    for flag in sorted(explicit):
        if flag == "photo":
            if asked.photo is not None and (
                not Path(asked.photo).is_file()
                or file_sha256(Path(asked.photo)) != manifest.get("input_sha256")
            ):
                raise StitchError(
                    f"{asked.photo} is not the photo this run was started from; drop it (--resume needs no "
                    "photo) or start a new run in another folder"
                )
            continue
        read = _RESUME_FLAGS.get(flag)
        if read is None:
            continue
        mine, theirs = read(asked), read(run)
        if flag in ("outpainter", "depth_backend") and not mine:
            continue
        if mine != theirs:
            name = "--" + flag.replace("_", "-")
            raise StitchError(
                f"--resume continues the run with the settings it started with; {name} {mine} differs from "
                f"the run's {theirs}: drop {name}, or start a new run in another folder"
            )
