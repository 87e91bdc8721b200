"""The geometry benchmark over many sequences: discovery under a root, protocols, per-sequence shards.

Discovery (`discover_sequences`): ROOT itself or any folder up to `MAX_DEPTH` levels below it that is a
known RGB-D layout (rgbd.py: 7-Scenes, ICL-NUIM/Redwood trajectory.log, ScanNet export, frames.json)
or a Hypersim scene (engine/bench/hypersim.py: one sequence per camera trajectory). A sequence is named by its
path relative to ROOT; its dataset is the layout's family (ScanNet, Hypersim, 7-Scenes, ICL-NUIM/Redwood,
generic): the summary has rows per sequence, per dataset and overall.

Protocols (`--protocol`), the paper's pair choices as named presets:
- default: j = i + gap (10 recorded frames, see engine.bench.pairs.default_gap), every pair.
- scannet: j = i + 10 recorded frames, i every 50th recorded frame, the first 50 scenes (sorted names).
- hypersim: pairs whose render covers >= 80 % of frame j.
- auto: scannet for ScanNet sequences, hypersim for Hypersim ones, default for the rest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.bench.hypersim import hypersim_cameras, is_hypersim_scene, load_hypersim
from engine.bench.rgbd import RGBDSequence, detect_layout, load_rgbd_sequence, load_trajectory_log
from splat.errors import StitchError

if TYPE_CHECKING:
    from engine.bench.geometry_config import BenchConfig

MAX_DEPTH = 3  # ScanNet root/scans/scene0000_00, 7-Scenes root/redkitchen/seq-01, Hypersim root/ai_001_001
DATASETS = {"7scenes": "7-Scenes", "trajectory_log": "ICL-NUIM/Redwood", "scannet": "ScanNet",
            "hypersim": "Hypersim", "generic": "generic"}  # fmt: skip
_DATA_SUBFOLDERS = {"color", "depth", "rgb", "image", "images", "pose", "intrinsic", "_detail"}
PROTOCOLS = ("default", "scannet", "hypersim", "auto")
SCANNET_SCENES = 50


@dataclass
class BenchSequence:
    seq: RGBDSequence
    dataset: str  # DATASETS value
    protocol: str  # the protocol its pairs follow


def _color_depth_without_log(folder: Path) -> bool:
    has_color = any((folder / d).is_dir() for d in ("color", "rgb", "image"))
    return has_color and (folder / "depth").is_dir() and not (folder / "trajectory.log").is_file()


def _trajectory_one_level_down(folder: Path, log: Callable[[str], None]) -> RGBDSequence | None:
    """ICL-NUIM/Open3D downloads sometimes keep trajectory.log in a subfolder next to color/ and depth/."""
    logs = sorted([*folder.glob("*/trajectory.log"), *folder.glob("*.log")])
    if len(logs) == 1:
        log(f"{folder}: using the trajectory {logs[0].relative_to(folder)} (not in the folder itself)")
        return load_trajectory_log(folder, logs[0])
    if not logs:
        if (folder / "pose").is_dir():
            return None  # a ScanNet export without intrinsic/: reported by the caller
        raise StitchError(
            f"{folder} has color/ and depth/ but no trajectory.log: the ICL-NUIM/Redwood layout is "
            f"{folder}/trajectory.log (5 lines per frame) next to color/ and depth/"
        )
    names = ", ".join(str(p.relative_to(folder)) for p in logs)
    raise StitchError(f"{folder} has several trajectory files ({names}); keep one as {folder}/trajectory.log")


def discover_sequences(
    root: str | Path, log: Callable[[str], None] = print, layout_hint: bool = True
) -> list[BenchSequence]:
    """Every sequence under root (see the module doc), in sorted path order."""
    root = Path(root)
    if not root.is_dir():
        raise StitchError(f"benchmark data folder {root} does not exist")
    found: list[BenchSequence] = []

    def name_of(folder: Path) -> str:
        rel = folder.relative_to(root).as_posix()
        return root.name if rel == "." else rel

    def visit(folder: Path, depth: int) -> None:
        if is_hypersim_scene(folder):
            cams = hypersim_cameras(folder)
            if not cams:
                raise StitchError(f"{folder}: a Hypersim scene without images/scene_cam_XX_geometry_hdf5")
            for cam in cams:
                seq = load_hypersim(folder, cam, name=f"{name_of(folder)}/{cam}")
                if len(seq) >= 2:
                    found.append(BenchSequence(seq, "Hypersim", "default"))
                else:
                    log(f"skipping {seq.name}: {len(seq)} usable frames")
            return
        try:
            layout = detect_layout(folder)
        except StitchError:
            layout = None
        seq = None
        if layout is not None:
            seq = load_rgbd_sequence(folder, layout)
        elif _color_depth_without_log(folder):
            seq = _trajectory_one_level_down(folder, log)
        if seq is not None:
            if len(seq) < 2:
                log(f"skipping {name_of(folder)}: {len(seq)} usable frames")
                return
            seq.name = name_of(folder)
            found.append(BenchSequence(seq, DATASETS.get(seq.layout, seq.layout), "default"))
            return
        if depth >= MAX_DEPTH:
            return
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if sub.name not in _DATA_SUBFOLDERS:
                visit(sub, depth + 1)

    visit(root, 0)
    if not found:
        raise StitchError(
            f"{root} holds no RGB-D sequence with poses up to {MAX_DEPTH} folders down (7-Scenes "
            "frame-*.depth.png, trajectory.log + color/ depth/, ScanNet color/ depth/ pose/ intrinsic/, "
            "frames.json, or a Hypersim scene with _detail/ and images/); see engine/bench/rgbd.py"
        )
    return found


def apply_protocol(seqs: list[BenchSequence], protocol: str, log: Callable[[str], None] = print) -> None:
    """Set each sequence's protocol; the scannet protocol keeps only the first 50 ScanNet scenes."""
    if protocol not in PROTOCOLS:
        raise StitchError(f"unknown --protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    for s in seqs:
        if protocol == "auto":
            s.protocol = {"ScanNet": "scannet", "Hypersim": "hypersim"}.get(s.dataset, "default")
        else:
            s.protocol = protocol
    scannet = [s for s in seqs if s.protocol == "scannet"]
    if len(scannet) > SCANNET_SCENES:
        drop = {id(s) for s in sorted(scannet, key=lambda s: s.seq.name)[SCANNET_SCENES:]}
        log(f"protocol scannet: the first {SCANNET_SCENES} scenes of {len(scannet)} are scored")
        seqs[:] = [s for s in seqs if id(s) not in drop]


def protocol_config(base: BenchConfig, protocol: str) -> BenchConfig:
    """The BenchConfig a protocol implies (explicit user settings of `base` win where they are set)."""
    if protocol == "scannet":
        return dataclasses.replace(base, gap_frames=10, stride_frames=50)
    if protocol == "hypersim":
        return dataclasses.replace(base, min_coverage=max(base.min_coverage, 0.8))
    return base
