"""Scene-geometry benchmark (engine/bench/geometry.py) and RGB-D loaders (engine/bench/rgbd.py)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import ndimage

from engine.bench.geometry import run_geometry_benchmark
from engine.bench.geometry_config import BenchConfig
from engine.bench.metrics import depth_metrics
from engine.bench.pairs import default_gap, select_pairs
from engine.bench.partial_depth import render_partial_depth
from engine.bench.rgbd import RGBDFrame, detect_layout, load_rgbd_sequence
from splat.cameras import Camera, pixel_grid, pose_to_world_to_camera, rotation_ypr
from splat.errors import StitchError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rgbd"
W, H, F = 64, 48, 60.0


def _camera(position=(0.0, 0.0, 0.0), yaw=0.0) -> Camera:
    K = np.array([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1.0]])
    return Camera(W, H, K, pose_to_world_to_camera(rotation_ypr(yaw), position))


def _scene_depth(cam: Camera, patch: bool = True) -> np.ndarray:
    """z-depth of a wall at world z = 4 and (optionally) a square patch at z = 2, |x|, |y| <= 0.3."""
    u, v = pixel_grid(W, H)
    rays_c = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(cam.K).T  # z = 1 in the camera
    c2w = cam.camera_to_world
    rays_w = rays_c @ c2w[:3, :3].T
    origin = c2w[:3, 3]
    depth = (4.0 - origin[2]) / rays_w[..., 2]
    if patch:
        t = (2.0 - origin[2]) / rays_w[..., 2]
        hit = origin + t[..., None] * rays_w
        inside = (np.abs(hit[..., 0]) <= 0.3) & (np.abs(hit[..., 1]) <= 0.3) & (t > 0)
        depth = np.where(inside, np.minimum(depth, t), depth)
    return depth.astype(np.float32)


def _frame(cam: Camera, patch: bool = True, name: str = "f") -> RGBDFrame:
    depth = _scene_depth(cam, patch)
    image = np.stack([np.clip(depth / 4.0, 0, 1)] * 3, -1).astype(np.float32)
    return RGBDFrame(name, image, depth, cam)


# --- metrics --------------------------------------------------------------------------------------


def test_metrics_zero_for_ground_truth_and_offset_for_shifted_depth():
    rng = np.random.default_rng(0)
    gt = (1.0 + 3.0 * rng.random((H, W))).astype(np.float32)
    covered = np.zeros((H, W), bool)
    covered[:, :40] = True
    m = depth_metrics(gt, gt, covered)
    assert m["mae"] == 0.0 and m["rmse"] == 0.0 and m["delta1"] == 1.0 and m["seam_mae"] == 0.0
    m = depth_metrics(gt + 0.25, gt, covered)
    assert m["mae"] == pytest.approx(0.25, abs=1e-6) and m["rmse"] == pytest.approx(0.25, abs=1e-6)
    assert m["n_pixels"] == H * (W - 40)


def test_pixels_without_ground_truth_or_covered_are_never_scored():
    gt = np.full((H, W), 2.0, np.float32)
    covered = np.zeros((H, W), bool)
    covered[:, :32] = True
    gt[:, 50:] = 0.0  # no ground truth here
    pred = gt.copy()
    pred[:, 50:] = 1000.0  # garbage where there is no ground truth...
    pred[:, :32] = -5.0  # ...and on covered pixels
    m = depth_metrics(pred, gt, covered)
    assert m["mae"] == 0.0 and m["n_pixels"] == H * (50 - 32)


def test_seam_band_is_uncovered_pixels_near_the_covered_region():
    gt = np.full((H, W), 2.0, np.float32)
    covered = np.zeros((H, W), bool)
    covered[:, :20] = True
    pred = gt.copy()
    pred[:, 20:30] += 1.0  # error only within 10 px of the seam
    m = depth_metrics(pred, gt, covered, band_px=10)
    assert m["seam_mae"] == pytest.approx(1.0) and m["n_seam"] == H * 10
    assert m["mae"] == pytest.approx(10 / 44)


# --- protocol -------------------------------------------------------------------------------------


@pytest.mark.parametrize("renderer", ["splat", "points"])
def test_covered_mask_matches_analytic_coverage_of_a_plane(renderer):
    """A wall seen from two cameras: j sees the wall where i's frustum reaches it (analytic z-buffer)."""
    src = _frame(_camera(), patch=False)
    dst_cam = _camera(position=(0.6, 0.0, 0.0))
    part = render_partial_depth(src, _frame(dst_cam, patch=False), renderer=renderer)
    # Analytic: the wall point behind each pixel of j, projected into i, must land inside i's image.
    u, _ = pixel_grid(W, H)
    x_world = (u - W / 2) / F * 4.0 + 0.6
    u_i = x_world / 4.0 * F + W / 2
    analytic = (u_i >= 0) & (u_i < W)
    assert not (part.covered & ~analytic).any()  # nothing covered that i never saw
    # Only the eroded 2-3 px rim along the boundary differs.
    missing = analytic & ~part.covered
    assert missing.sum() <= 3 * H
    np.testing.assert_allclose(part.known_depth[part.covered], 4.0, rtol=2e-3)


def test_known_depth_is_what_generation_would_see_for_the_same_geometry():
    """The benchmark scores a method on the pixels generation would hand it: frame i seeded by the pipeline's
    own seeding (StitchPipeline._seed_gaussians, FusionConfig) and rendered into frame j gives the same
    covered pixels and known depth as render_partial_depth."""
    from engine.config import FusionConfig, OptimConfig
    from engine.fusion import coverage_masks
    from engine.pipeline import StitchPipeline, ViewRecord
    from splat.render import render_camera

    src = _frame(_camera())
    dst = _frame(_camera(position=(0.5, 0.0, 0.0), yaw=-5.0))
    part = render_partial_depth(src, dst)
    fusion = FusionConfig()
    pipeline = StitchPipeline(None, None, fusion, OptimConfig(), sh_degree=0)
    record = ViewRecord(src.camera, src.image, src.depth, new_mask=src.valid)
    out = render_camera(pipeline._seed_gaussians(record), dst.camera)
    alpha = out.alpha[0, ..., 0].detach().numpy()
    covered, _ = coverage_masks(alpha, fusion.erode_px, fusion.dilate_px, fusion.coverage_threshold)
    assert 0.3 < part.covered.mean() < 0.95  # a real partial view: some covered, some new
    np.testing.assert_array_equal(part.covered, covered)
    depth = out.depth[0, ..., 0].detach().numpy()
    np.testing.assert_allclose(part.known_depth[covered], depth[covered], rtol=1e-5)


def test_disocclusion_behind_a_patch_is_uncovered():
    src = _frame(_camera())
    dst = _frame(_camera(position=(0.5, 0.0, 0.0)))
    part = render_partial_depth(src, dst)
    # Wall pixels that the patch hid from camera i: their wall point projects onto the patch in i.
    u, v = pixel_grid(W, H)
    wall_x = (u - W / 2) / F * 4.0 + 0.5
    wall_y = (v - H / 2) / F * 4.0
    hidden = (np.abs(wall_x / 2.0) <= 0.3) & (np.abs(wall_y / 2.0) <= 0.3) & (dst.depth > 3.9)
    assert hidden.sum() > 20
    # The disoccluded wall is uncovered (the disk erosion may leave the hole's corner pixels covered).
    assert part.covered[hidden].mean() < 0.1
    inner = ndimage.binary_erosion(hidden)
    assert not part.covered[inner].any()


def test_pair_selection_is_deterministic_and_bounded():
    assert select_pairs(6, 2) == [(0, 2), (1, 3), (2, 4), (3, 5)]
    a = select_pairs(30, 3, max_pairs=5, seed=1)
    assert a == select_pairs(30, 3, max_pairs=5, seed=1) and len(a) == 5 and a == sorted(a)
    assert a != select_pairs(30, 3, max_pairs=5, seed=2)
    with pytest.raises(StitchError, match="gap"):
        select_pairs(3, 3)


# --- end to end on a synthetic folder (generic layout) --------------------------------------------


def _write_generic(root: Path, n: int = 4) -> None:
    frames = []
    K = [[F, 0, W / 2 - 0.5], [0, F, H / 2 - 0.5], [0, 0, 1]]  # OpenCV convention in files
    for k in range(n):
        cam = _camera(position=(0.15 * k, 0.0, 0.0))
        fr = _frame(cam)
        cv2.imwrite(str(root / f"c{k}.png"), (fr.image * 255).astype(np.uint8))
        cv2.imwrite(str(root / f"d{k}.png"), np.round(fr.depth * 1000).astype(np.uint16))
        frames.append(
            {"color": f"c{k}.png", "depth": f"d{k}.png", "camera_to_world": cam.camera_to_world.tolist()}
        )
    (root / "frames.json").write_text(json.dumps({"intrinsics": K, "depth_scale": 1000, "frames": frames}))


class _Counting:
    """A method that returns a constant offset from nearest fill and counts its calls."""

    name = "offset"

    def __init__(self) -> None:
        self.calls = 0

    def describe(self) -> dict:
        return {"backend": "offset"}

    def __call__(self, image, known_depth, known_mask):
        self.calls += 1
        return np.full(known_depth.shape, 3.0, np.float32)


def test_run_writes_tables_figure_and_resumes(tmp_path):
    data = tmp_path / "synthetic"
    data.mkdir()
    _write_generic(data)
    seq = load_rgbd_sequence(data)
    assert seq.layout == "generic" and len(seq) == 4
    np.testing.assert_allclose(seq.load(0).camera.K[0, 2], W / 2)  # OpenCV cx + 0.5
    from engine.backends.depth_classical import NearestFillCompleter

    counting = _Counting()
    methods = {"nearest": NearestFillCompleter(), "offset": counting}
    out = tmp_path / "out"
    table = run_geometry_benchmark(data, out, methods, gap=2, seed=0, log=lambda s: None)
    assert {r.method for r in table.rows} == {"nearest", "offset"}
    assert all(r.n_pairs >= 1 for r in table.rows)
    for name in ("results.csv", "summary.csv", "summary.json", "summary.md", "figure.png"):
        assert (out / name).is_file(), name
    assert "| nearest |" in (out / "summary.md").read_text()
    calls = counting.calls
    table2 = run_geometry_benchmark(data, out, methods, gap=2, seed=0, log=lambda s: None)
    # Resumed from the per-pair JSON files: only the figure's pairs are recomputed.
    assert [r.mae for r in table2.rows] == [r.mae for r in table.rows]
    assert counting.calls - calls <= 2
    # A coverage threshold no pair meets: a clear error, and the skips are cached like results.
    strict = BenchConfig(min_coverage=0.999, figure=False)
    with pytest.raises(StitchError, match="no pair could be scored"):
        run_geometry_benchmark(data, out, methods, gap=2, config=strict, log=lambda s: None)
    calls = counting.calls
    with pytest.raises(StitchError, match="no pair could be scored"):
        run_geometry_benchmark(data, out, methods, gap=2, config=strict, log=lambda s: None)
    assert counting.calls == calls


# --- loaders --------------------------------------------------------------------------------------


def test_7scenes_trajectory_log_and_scannet_layouts(tmp_path):
    depth = np.full((H, W), 1500, np.uint16)
    depth[0, 0] = 65535
    color = np.zeros((2 * H, 2 * W, 3), np.uint8)
    s7 = tmp_path / "s7"
    s7.mkdir()
    for k in range(2):
        cv2.imwrite(str(s7 / f"frame-{k:06d}.color.png"), color)
        cv2.imwrite(str(s7 / f"frame-{k:06d}.depth.png"), depth)
        np.savetxt(s7 / f"frame-{k:06d}.pose.txt", np.eye(4))
    seq = load_rgbd_sequence(s7)
    fr = seq.load(1)
    assert seq.layout == "7scenes" and fr.image.shape == (H, W, 3) and fr.depth[1, 1] == 1.5
    assert fr.depth[0, 0] == 0.0  # 65535 = invalid

    tl = tmp_path / "icl"
    (tl / "color").mkdir(parents=True)
    (tl / "depth").mkdir()
    log = ""
    for k in range(3):
        cv2.imwrite(str(tl / "color" / f"{k:05d}.jpg"), color)
        cv2.imwrite(str(tl / "depth" / f"{k:05d}.png"), depth)
        log += f"{k} {k} {k + 1}\n" + "\n".join(" ".join(str(x) for x in row) for row in np.eye(4)) + "\n"
    (tl / "trajectory.log").write_text(log)
    assert detect_layout(tl) == "trajectory_log" and len(load_rgbd_sequence(tl)) == 3

    sn = tmp_path / "scannet"
    for d in ("color", "depth", "pose", "intrinsic"):
        (sn / d).mkdir(parents=True)
    np.savetxt(sn / "intrinsic" / "intrinsic_depth.txt", np.eye(4))
    for k in range(3):
        cv2.imwrite(str(sn / "color" / f"{k}.jpg"), color)
        cv2.imwrite(str(sn / "depth" / f"{k}.png"), depth)
        pose = np.eye(4) if k != 1 else np.full((4, 4), -np.inf)  # lost tracking
        np.savetxt(sn / "pose" / f"{k}.txt", pose)
    seq = load_rgbd_sequence(sn)
    assert seq.layout == "scannet" and [f.name for f in seq.frames] == ["0", "2"]


def test_unknown_folder_is_a_clear_error(tmp_path):
    with pytest.raises(StitchError, match="not a known RGB-D layout"):
        load_rgbd_sequence(tmp_path)
    with pytest.raises(StitchError, match="does not exist"):
        load_rgbd_sequence(tmp_path / "nope")


@pytest.fixture
def redkitchen() -> Path:
    root = DATA / "redkitchen_dev"
    if not root.is_dir():
        pytest.skip("shared RGB-D data not present")
    return root


def test_real_folders_load_with_consistent_poses(redkitchen):
    seq = load_rgbd_sequence(redkitchen)
    assert seq.layout == "7scenes" and len(seq) == 25 and default_gap(seq) == 5
    a, b = seq.load(0), seq.load(2)
    assert a.image.shape == (480, 640, 3) and a.depth.dtype == np.float32
    part = render_partial_depth(a, b, renderer="points")
    both = part.covered & b.valid
    # Ground truth of frame j agrees with frame i's geometry rendered into j (poses and intrinsics right).
    assert np.median(np.abs(part.known_depth[both] - b.depth[both])) < 0.02
    icl = DATA / "icl_livingroom_5"
    if icl.is_dir():
        seq = load_rgbd_sequence(icl)
        assert seq.layout == "trajectory_log" and len(seq) == 5 and default_gap(seq) == 2


def test_learned_backends_plug_in_as_depth_specs(tmp_path):
    """`depth:SPEC` runs any --depth backend via the backend registry: here a tiny monocular model (the tiny
    completion network takes the same path but needs ~10 s per call on CPU)."""
    from tiny_learned_models import make_tiny_depth_anything

    data = tmp_path / "synthetic"
    data.mkdir()
    _write_generic(data, n=3)
    mono = make_tiny_depth_anything(tmp_path / "mono")
    names = ["nearest", f"depth:mono:{mono}"]
    table = run_geometry_benchmark(data, tmp_path / "out", names, gap=2, log=lambda s: None)
    rows = {r.method: r for r in table.rows}
    assert set(rows) == set(names)
    assert all(np.isfinite(r.mae) and r.mae >= 0 for r in rows.values())
    with pytest.raises(StitchError, match="not available"):
        run_geometry_benchmark(
            data, tmp_path / "out2", ["depth:mono:/nonexistent-model"], gap=2, log=lambda s: None
        )
