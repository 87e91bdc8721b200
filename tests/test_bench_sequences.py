"""The geometry benchmark over many sequences (engine/bench/sequences.py), the Hypersim loader
(bench/hypersim.py) and the rough edges a new user hit (gap, layouts, messages, columns, ETA, ticks)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_in_process import run_cli
from test_geometry_bench import F, H, W, _camera, _Counting, _frame, _write_generic

from engine.bench.geometry import run_geometry_benchmark as run
from engine.bench.geometry_config import BenchConfig
from engine.bench.methods import build_methods
from engine.bench.partial_depth import render_partial_depth
from engine.bench.rgbd import RGBDSequence
from engine.bench.scoring import plan_sequences
from engine.bench.sequences import BenchSequence, apply_protocol, discover_sequences
from splat.errors import StitchError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rgbd"
QUIET = BenchConfig(sweep_gaps=False, figure=False)


# --- fake datasets in their real layouts ----------------------------------------------------------


def _write_scannet(root: Path, n: int = 4, step: int = 10) -> None:
    for d in ("color", "depth", "pose", "intrinsic"):
        (root / d).mkdir(parents=True)
    K = np.eye(4)
    K[:3, :3] = [[F, 0, W / 2 - 0.5], [0, F, H / 2 - 0.5], [0, 0, 1]]
    np.savetxt(root / "intrinsic" / "intrinsic_depth.txt", K)
    for k in range(n):
        cam = _camera(position=(0.15 * k, 0.0, 0.0))
        fr = _frame(cam)
        fid = k * step
        cv2.imwrite(str(root / "color" / f"{fid}.jpg"), (fr.image * 255).astype(np.uint8))
        cv2.imwrite(str(root / "depth" / f"{fid}.png"), np.round(fr.depth * 1000).astype(np.uint16))
        np.savetxt(root / "pose" / f"{fid}.txt", cam.camera_to_world)


def _h5(path: Path, array: np.ndarray) -> None:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("dataset", data=array)


def _write_hypersim(scene: Path, n: int = 3, metres_per_unit: float = 0.5) -> None:
    """A Hypersim scene in the real layout: distance-along-ray depth, OpenGL camera orientations in asset
    units, preview JPEGs. The geometry is the same wall + patch as the other synthetic scenes."""
    from engine.bench.hypersim import hypersim_intrinsics

    K = hypersim_intrinsics(W, H)  # Hypersim's 60-degree camera at W x H
    f = K[0, 0]
    positions, rotations = [], []
    for k in range(n):
        cam = _camera(position=(0.15 * k, 0.0, 0.0))
        cam_k = type(cam)(W, H, np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1.0]]), cam.world_to_camera)
        fr = _frame(cam_k)
        u = np.arange(W)[None, :] + 0.5 - W / 2
        v = np.arange(H)[:, None] + 0.5 - H / 2
        distance = fr.depth * np.sqrt(u**2 + v**2 + f**2) / f
        distance[0, 0] = np.nan  # no geometry
        _h5(scene / "images" / "scene_cam_00_geometry_hdf5" / f"frame.{k:04d}.depth_meters.hdf5", distance)
        prev = scene / "images" / "scene_cam_00_final_preview" / f"frame.{k:04d}.color.jpg"
        prev.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(prev), (fr.image * 255).astype(np.uint8))
        c2w = cam.camera_to_world
        positions.append(c2w[:3, 3] / metres_per_unit)
        rotations.append(c2w[:3, :3] @ np.diag([1.0, -1.0, -1.0]))  # OpenCV -> OpenGL camera axes
    _h5(scene / "_detail" / "cam_00" / "camera_keyframe_positions.hdf5", np.array(positions))
    _h5(scene / "_detail" / "cam_00" / "camera_keyframe_orientations.hdf5", np.array(rotations))
    _h5(scene / "_detail" / "cam_00" / "camera_keyframe_frame_indices.hdf5", np.arange(n))
    (scene / "_detail" / "metadata_scene.csv").write_text(
        f"parameter_name,parameter_value\nmeters_per_asset_unit,{metres_per_unit}\n"
    )


# --- Hypersim -------------------------------------------------------------------------------------


def test_hypersim_loader_converts_ray_distance_to_z_and_poses_to_metres(tmp_path):
    pytest.importorskip("h5py")
    from engine.bench.hypersim import load_hypersim

    scene = tmp_path / "ai_001_001"
    _write_hypersim(scene)
    seq = load_hypersim(scene, "cam_00")
    assert seq.layout == "hypersim" and len(seq) == 3 and seq.name == "ai_001_001/cam_00"
    a, b = seq.load(0), seq.load(1)
    # The wall at world z = 4 has z-depth 4 everywhere (the ray distance grows towards the corners).
    wall = a.depth > 3.0
    np.testing.assert_allclose(a.depth[wall], 4.0, rtol=1e-4)
    assert a.depth[0, 0] == 0.0  # NaN distance = invalid
    # Positions come back in metres (asset units x 0.5) and OpenCV axes: frame 1 sits 0.15 m to the right.
    np.testing.assert_allclose(b.camera.camera_to_world[:3, 3], [0.15, 0, 0], atol=1e-9)
    # Frame 0's geometry rendered into frame 1 agrees with frame 1's ground truth.
    part = render_partial_depth(a, b, renderer="points")
    both = part.covered & b.valid
    assert both.mean() > 0.5 and np.median(np.abs(part.known_depth[both] - b.depth[both])) < 0.01


# --- many sequences -------------------------------------------------------------------------------


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "synthetic").mkdir(parents=True)
    _write_generic(root / "synthetic", n=4)
    _write_scannet(root / "scannet" / "scans" / "scene0000_00")
    _write_scannet(root / "scannet" / "scans" / "scene0001_00")
    _write_hypersim(root / "hypersim" / "ai_001_001")
    return root


def test_root_with_many_sequences_aggregates_per_dataset_and_overall_and_resumes(tmp_path):
    pytest.importorskip("h5py")
    root = _root(tmp_path)
    if (DATA / "icl_livingroom_5").is_dir():  # one of the shared folders, read in place
        (root / "icl").symlink_to(DATA / "icl_livingroom_5")
    seqs = discover_sequences(root, log=lambda s: None)
    by_name = {s.seq.name: s.dataset for s in seqs}
    assert by_name["synthetic"] == "generic" and by_name["hypersim/ai_001_001/cam_00"] == "Hypersim"
    assert by_name["scannet/scans/scene0000_00"] == by_name["scannet/scans/scene0001_00"] == "ScanNet"
    counting = _Counting()
    from engine.backends.depth_classical import NearestFillCompleter

    methods = {"nearest": NearestFillCompleter(), "offset": counting}
    out = tmp_path / "out"
    table = run(root, out, methods, max_pairs=1, config=QUIET, log=lambda s: None)
    with (out / "results.csv").open() as fh:
        results = list(csv.DictReader(fh))
    assert "scored_fraction" in results[0] and "uncovered" not in results[0]
    rows = {(r.level, r.dataset, r.method): r for r in table.rows}
    n_seq = len(seqs)
    overall = rows[("overall", "all", "nearest")]
    nearest = [r for r in results if r["method"] == "nearest"]
    assert overall.n_pairs == len(nearest) == n_seq  # one pair per sequence, each counted once
    assert overall.mae == pytest.approx(np.mean([float(r["mae"]) for r in nearest]))
    scannet = rows[("dataset", "ScanNet", "nearest")]
    assert scannet.n_pairs == 2
    assert scannet.mae == pytest.approx(
        np.mean([float(r["mae"]) for r in nearest if r["dataset"] == "ScanNet"])
    )
    assert ("dataset", "Hypersim", "nearest") not in rows  # one sequence: its row is the sequence row
    md = (out / "summary.md").read_text()
    assert "| overall | all | all |" in md and "*scored* the mean share" in md and "s/pair" in md
    # Resume: every pair comes from the cache, the method is not called again.
    calls = counting.calls
    again = run(root, out, methods, max_pairs=1, config=QUIET, log=lambda s: None)
    assert counting.calls == calls and [r.mae for r in again.rows] == [r.mae for r in table.rows]


@pytest.mark.slow
def test_sharded_local_executor_matches_inline(tmp_path):
    pytest.importorskip("submitit")
    from engine.cluster import ClusterOptions

    root = tmp_path / "root"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        _write_generic(root / name, n=3)
    inline = run(root, tmp_path / "inline", ["nearest"], config=QUIET, log=lambda s: None)
    sharded = run(
        root,
        tmp_path / "sharded",
        ["nearest"],
        config=QUIET,
        log=lambda s: None,
        cluster=ClusterOptions(executor="local", shards=2),
    )
    assert [(r.level, r.sequence, r.mae) for r in sharded.rows] == [
        (r.level, r.sequence, r.mae) for r in inline.rows
    ]
    assert len(list((tmp_path / "sharded" / "submitit").glob("*_log.out"))) >= 2


# --- protocols ------------------------------------------------------------------------------------


def test_scannet_protocol_pairs_every_50th_frame_ten_frames_apart_first_50_scenes(tmp_path):
    root = tmp_path / "scene0000_00"
    _write_scannet(root, n=14, step=10)  # recorded every 10th frame: ids 0, 10, ..., 130
    (seq,) = discover_sequences(root, log=lambda s: None)
    apply_protocol([seq], "scannet")
    (plan,) = plan_sequences([seq], QUIET, log=lambda s: None)
    ids = [[int(seq.seq.frames[k].name) for k in pair] for pair in plan.gaps[0][1]]
    assert ids == [[0, 10], [50, 60], [100, 110]]  # j = i + 10 recorded frames, i every 50th
    fakes = [
        BenchSequence(RGBDSequence(f"scene{k:04d}_00", "scannet", tmp_path, []), "ScanNet", "x")
        for k in range(52)
    ]
    apply_protocol(fakes, "auto", log=lambda s: None)
    assert len(fakes) == 50 and fakes[-1].seq.name == "scene0049_00" and fakes[0].protocol == "scannet"
    hyp = [BenchSequence(RGBDSequence("h", "hypersim", tmp_path, []), "Hypersim", "x")]
    apply_protocol(hyp, "auto")
    from engine.bench.sequences import protocol_config

    assert protocol_config(QUIET, hyp[0].protocol).min_coverage == 0.8
    with pytest.raises(StitchError, match="--protocol"):
        apply_protocol(hyp, "nyu")


# --- rough edges ----------------------------------------------------------------------------------


def test_gap_too_large_is_exit_2_and_leaves_no_output_folder(tmp_path, capsys):
    data = tmp_path / "synthetic"
    data.mkdir()
    _write_generic(data, n=4)
    out = tmp_path / "out"
    code, _, err = run_cli(
        ["bench", "geometry", str(data), "-o", str(out), "--gap", "9", "--methods", "nearest"], capsys
    )
    assert code == 2 and "--gap 9 leaves no pairs in synthetic (4 frames)" in err and "--gap <= 3" in err
    assert not out.exists()
    # A failure during scoring (no pair meets the coverage) does not leave an empty folder either.
    with pytest.raises(StitchError, match="no pair could be scored"):
        run(data, out, ["nearest"], gap=2, config=BenchConfig(min_coverage=0.999), log=lambda s: None)
    assert not out.exists() or any(p.is_file() for p in out.rglob("*"))


def _icl_like(root: Path) -> None:
    (root / "color").mkdir(parents=True)
    (root / "depth").mkdir()
    for k in range(3):
        fr = _frame(_camera(position=(0.1 * k, 0, 0)))
        cv2.imwrite(str(root / "color" / f"{k:05d}.png"), (fr.image * 255).astype(np.uint8))
        cv2.imwrite(str(root / "depth" / f"{k:05d}.png"), np.round(fr.depth * 1000).astype(np.uint16))


def test_trajectory_log_one_level_down_is_found_or_named(tmp_path):
    root = tmp_path / "living_room"
    _icl_like(root)
    with pytest.raises(
        StitchError, match=r"no trajectory.log: the ICL-NUIM/Redwood layout is .*trajectory.log"
    ):
        discover_sequences(root, log=lambda s: None)
    (root / "gt").mkdir()
    block = "\n".join(" ".join(str(x) for x in row) for row in np.eye(4))
    (root / "gt" / "trajectory.log").write_text("".join(f"{k} {k} 4\n{block}\n" for k in range(3)))
    notes: list[str] = []
    (seq,) = discover_sequences(root, log=notes.append)
    assert seq.dataset == "ICL-NUIM/Redwood" and len(seq.seq) == 3
    assert any("gt/trajectory.log" in n for n in notes)
    (root / "other").mkdir()
    (root / "other" / "trajectory.log").write_text((root / "gt" / "trajectory.log").read_text())
    with pytest.raises(
        StitchError, match=r"several trajectory files \(gt/trajectory.log, other/trajectory.log\)"
    ):
        discover_sequences(root, log=lambda s: None)


def test_skip_messages_are_whole_and_the_weights_hint_fits_bench(monkeypatch):
    from engine.bench import methods as bench_methods

    long = (
        "model 'x/y' for depth completion is not available on this machine: run `stitch models download x` "
        "on a connected machine, or pass --model-path DIR with its files; without weights use --preset "
        "offline (classical backends)"
    )
    assert len(long) > 160

    def missing():
        raise StitchError(long)

    bench_methods.available_methods()
    monkeypatch.setitem(
        bench_methods._REGISTRY, "needs-weights", bench_methods.MethodSpec("needs-weights", missing)
    )
    notes: list[str] = []
    built = build_methods(None, notes.append)
    assert "needs-weights" not in built and "nearest" in built
    (note,) = [n for n in notes if "needs-weights" in n]
    assert note.endswith("need no weights)") and "--model-path DIR with its files" in note
    assert "--preset" not in note
    with pytest.raises(StitchError) as exc:
        build_methods(["needs-weights"], notes.append)
    assert "--preset" not in str(exc.value) and "leave the method out" in str(exc.value)


def test_progress_says_how_the_gap_was_chosen_and_gives_an_eta(tmp_path):
    data = tmp_path / "synthetic"
    data.mkdir()
    _write_generic(data, n=5)
    lines: list[str] = []
    run(data, tmp_path / "out", ["nearest"], config=QUIET, log=lines.append)
    text = "\n".join(lines)
    assert "gap 2 = 10 recorded frames (the paper's ScanNet spacing) / 1 recorded frame(s) per file" in text
    assert "capped at half of the 5 frames" in text and "--gap N to change" in text
    assert "3 pairs to score" in text and "--max-pairs N" in text
    pair_lines = [ln for ln in lines if ln.strip().startswith("[")]
    assert pair_lines[0].strip().startswith("[1/3]") and all("ETA" in ln for ln in pair_lines)
    assert "ETA 0:00" in pair_lines[-1]
    assert any("estimated time for all 3 pairs" in ln for ln in lines)


def test_figure_gap_axis_has_whole_number_ticks(tmp_path, monkeypatch):
    import matplotlib.figure

    data = tmp_path / "synthetic"
    data.mkdir()
    _write_generic(data, n=5)
    ticks: list[list[float]] = []
    save = matplotlib.figure.Figure.savefig

    def spy(fig, *args, **kwargs):
        fig.canvas.draw()
        for ax in fig.axes:
            if ax.get_xlabel() == "frame gap (index)":
                lo, hi = ax.get_xlim()
                ticks.append([t for t in ax.get_xticks() if lo <= t <= hi])
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    run(data, tmp_path / "out", ["nearest"], gap=2, config=BenchConfig(sweep_pairs=1), log=lambda s: None)
    assert ticks and ticks[0] and all(float(t).is_integer() for t in ticks[0])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert sorted({r["gap"] for r in summary["rows"]}) == [1, 2, 4]
