"""Which frame pairs the geometry benchmark scores: (i, i + gap), the default gap, a seeded subset."""

from __future__ import annotations

import numpy as np

from engine.bench.rgbd import RGBDSequence
from splat.errors import StitchError


def frame_step(seq: RGBDSequence) -> int:
    """Median difference of the frames' numeric ids (1 for consecutive frames, 2 for every 2nd frame)."""
    ids = []
    for f in seq.frames:
        digits = "".join(ch if ch.isdigit() else " " for ch in f.name).split()
        ids.append(int(digits[-1]) if digits else len(ids))
    diffs = np.diff(ids)
    diffs = diffs[diffs > 0]
    return int(np.median(diffs)) if len(diffs) else 1


def default_gap(seq: RGBDSequence, frames: int = 10) -> int:
    """The paper's ScanNet spacing (10 recorded frames) in this folder's index units, capped at half the
    sequence so that a small folder still yields several pairs."""
    gap = max(1, round(frames / frame_step(seq)))
    return max(1, min(gap, len(seq) // 2, len(seq) - 1))


def explain_default_gap(seq: RGBDSequence, frames: int = 10) -> str:
    """One line saying how the default gap of `seq` was chosen (printed before scoring)."""
    step, gap = frame_step(seq), default_gap(seq, frames)
    why = f"{frames} recorded frames (the paper's ScanNet spacing) / {step} recorded frame(s) per file"
    if gap < max(1, round(frames / step)):
        why += f", capped at half of the {len(seq)} frames"
    return f"gap {gap} = {why}; --gap N to change"


def select_pairs(
    n_frames: int, gap: int, max_pairs: int | None = None, seed: int = 0, stride: int = 1
) -> list[tuple[int, int]]:
    """(i, i + gap) for i = 0, stride, 2 stride, ...; beyond max_pairs a seeded random subset, in order."""
    if gap < 1:
        raise StitchError(f"gap must be >= 1, got {gap}")
    pairs = [(i, i + gap) for i in range(0, n_frames - gap, max(1, stride))]
    if not pairs:
        raise StitchError(f"gap {gap} leaves no pairs in {n_frames} frames; use a smaller --gap")
    if max_pairs is not None and max_pairs < len(pairs):
        if max_pairs < 1:
            raise StitchError(f"--max-pairs must be >= 1, got {max_pairs}")
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(pairs), size=max_pairs, replace=False))
        pairs = [pairs[k] for k in keep]
    return pairs
