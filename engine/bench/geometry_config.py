"""The geometry benchmark's settings (BenchConfig) and the protocol version its cached results carry."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from engine.config import FusionConfig

_SEEDING = FusionConfig()
# Bump when the protocol changes: cached per-pair results of other versions are recomputed.
# 2: frame i seeded with the pipeline's FusionConfig (scale 0.7, mean rule), was a fixed scale of 0.5.
BENCH_VERSION = 2


@dataclass
class BenchConfig:
    gap: int | None = None  # None: default_gap(sequence, gap_frames)
    gap_frames: int = 10  # the default gap in recorded frames (scannet protocol: 10)
    stride_frames: int = 0  # first frames of pairs every this many recorded frames (scannet: 50; 0: all)
    sweep_gaps: bool = True  # also score gap/2 and 2*gap on a few pairs (the MAE-vs-gap figure)
    sweep_pairs: int = 6
    min_coverage: float = 0.0  # skip pairs whose render covers less of frame j (Hypersim protocol: 0.8)
    max_pairs: int | None = None
    seed: int = 0
    band_px: float = 10.0
    # Frame i's geometry is seeded and its coverage eroded exactly as the pipeline seeds a view's new pixels.
    erode_px: int = _SEEDING.erode_px
    scale_factor: float = _SEEDING.scale_factor
    scale_rule: str = _SEEDING.scale_rule
    opacity: float = _SEEDING.first_opacity
    renderer: str = "auto"
    figure: bool = True
    protocol: str = "default"  # engine.bench.sequences.PROTOCOLS

    def protocol_key(self) -> str:
        """What a cached per-pair result depends on (method settings are added per method)."""
        d = {"v": BENCH_VERSION, "band": self.band_px, "erode": self.erode_px, "scale": self.scale_factor,
             "scale_rule": self.scale_rule, "opacity": self.opacity,
             "min_coverage": self.min_coverage}  # fmt: skip
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
