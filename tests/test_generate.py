"""`stitch generate` end to end on real photos with the offline defaults: files, quality, seams, resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from engine.config import FusionConfig, GenerateConfig, OptimConfig
from engine.run import run_generate
from engine.rundir import RunDirectory
from engine.trajectory import trajectory

REPO = Path(__file__).resolve().parents[1]


def _config(photo: Path, mode: str = "stage", max_side: int = 128, steps: int = 5, **kw) -> GenerateConfig:
    return GenerateConfig(
        photo=photo,
        prompt="a test",
        mode=mode,
        max_side=max_side,
        optim=OptimConfig(steps_per_view=steps),
        **kw,
    )


def test_stage_scene_reproduces_views_and_has_no_holes(kyoto, tmp_path):
    result = run_generate(_config(kyoto, steps=20, max_side=160), output=tmp_path / "scene.ply", quiet=True)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert manifest["backends"]["outpainter"]["backend"] == "classical"
    assert manifest["backends"]["depth"]["backend"] == "classical"
    assert len(manifest["timings"]) == 3 and "optimize" in manifest["timings"][1]
    quality = manifest["quality"]
    # 23 dB, not 25: Gaussians are kept >= 0.7 px (splat.optimize.MIN_SIGMA_PX) so web viewers show no
    # background between them, which stitch's 0.3 px^2 low-pass renders a little blurrier (photo: 23.7 dB).
    assert min(quality["psnr_generation_views"]) > 23.0, quality
    assert min(quality["alpha_coverage_between_views"]) > 0.98, quality
    assert (tmp_path / "scene.ply").stat().st_size > 0 and (tmp_path / "preview.png").is_file()
    for k in range(3):
        assert (tmp_path / "views" / f"view_{k:03d}.png").is_file()
        assert (tmp_path / "views" / f"depth_{k:03d}.npy").is_file()
    # The new views really added Gaussians on the sides the first view could not see.
    assert manifest["timings"][1]["n_new"] > 0 and manifest["timings"][2]["n_new"] > 0
    assert len(result.gaussians) == manifest["n_gaussians"]


def test_seam_depth_is_continuous(kyoto, tmp_path):
    """New pixels next to the covered region continue the rendered known depth (median jump < 2 %)."""
    run_generate(_config(kyoto, steps=0, max_side=192), output=tmp_path / "scene.ply", quiet=True)
    rd = RunDirectory(tmp_path)
    jumps = []
    for k in (1, 2):
        _, depth, new = rd.load_view(k)
        covered = ~new
        # Horizontal neighbours across the seam: a new pixel beside a covered pixel.
        left_new = new[:, 1:] & covered[:, :-1]
        right_new = new[:, :-1] & covered[:, 1:]
        d_new = np.concatenate([depth[:, 1:][left_new], depth[:, :-1][right_new]])
        d_old = np.concatenate([depth[:, :-1][left_new], depth[:, 1:][right_new]])
        assert len(d_new) > 50
        jumps.append(np.abs(d_new - d_old) / d_old)
    assert np.median(np.concatenate(jumps)) < 0.02


@pytest.mark.parametrize("mode", ["single", "360"])
def test_modes_on_every_photo(photos, tmp_path, mode):
    """Every real photo yields a scene in single and 360 mode (tiny: checks robustness, not looks)."""
    for photo in photos:
        out = tmp_path / photo.stem / "scene.ply"
        result = run_generate(_config(photo, mode=mode, max_side=64, steps=1), output=out, quiet=True)
        assert out.is_file() and len(result.gaussians) >= 64 * 40
        cams = trajectory(mode, 64, 40)
        assert len(result.views) == len(cams)


def test_json_camera_path(kyoto, tmp_path):
    path = tmp_path / "path.json"
    path.write_text(
        json.dumps({"cameras": [{"yaw": 0}, {"yaw": 15, "pitch": 5}, {"yaw": -10, "position": [0.1, 0, 0]}]})
    )
    run_generate(_config(kyoto, path=path, max_side=96, steps=2), output=tmp_path / "s.ply", quiet=True)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["mode"] == "path" and len(manifest["cameras"]) == 3


def test_same_seed_same_scene(kyoto, tmp_path):
    a = run_generate(_config(kyoto, max_side=96, steps=3), output=tmp_path / "a" / "s.ply", quiet=True)
    b = run_generate(_config(kyoto, max_side=96, steps=3), output=tmp_path / "b" / "s.ply", quiet=True)
    assert (tmp_path / "a" / "s.ply").read_bytes() == (tmp_path / "b" / "s.ply").read_bytes()
    torch.testing.assert_close(a.gaussians.means, b.gaussians.means, rtol=0, atol=0)


def _generate_cmd(photo: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from cli import main; main()",
        "generate",
        str(photo),
        "--prompt",
        "x",
        "--mode",
        "360",
        "--max-side",
        "64",
        "--steps",
        "3",
        "-o",
        str(out),
        "--quiet",
    ]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_360_run_resumes_to_the_same_scene(kyoto, tmp_path, sig):
    reference = tmp_path / "ref" / "scene.ply"
    subprocess.run(_generate_cmd(kyoto, reference), cwd=REPO, check=True, capture_output=True)
    out = tmp_path / "run" / "scene.ply"
    proc = subprocess.Popen(
        _generate_cmd(kyoto, out), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    state = out.parent / "checkpoint" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text())["views_done"] >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    if sig == signal.SIGINT:
        assert b"--resume" in err and b"Traceback" not in err
    assert not out.exists(), "no scene may be written by an interrupted run"
    done = json.loads(state.read_text())["views_done"]
    assert 4 <= done < 13
    resumed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from cli import main; main()",
            "generate",
            "--resume",
            str(out.parent),
            "--quiet",
        ],
        cwd=REPO,
        capture_output=True,
    )
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert out.read_bytes() == reference.read_bytes()


def test_bad_inputs_give_one_line_and_exit_2(tmp_path):
    runner = CliRunner()
    (tmp_path / "notimage.jpg").write_bytes(b"hello, not a jpeg")
    from PIL import Image

    Image.new("RGB", (1, 1)).save(tmp_path / "tiny.png")
    cases = [
        (["generate", str(tmp_path / "missing.jpg")], "does not exist"),
        (["generate", str(tmp_path)], "is a directory"),
        (["generate", str(tmp_path / "notimage.jpg")], "not a readable image"),
        (["generate", str(tmp_path / "tiny.png")], "at least"),
        (["generate", str(tmp_path / "tiny.png"), "--mode", "spiral"], "unknown mode"),
        (["generate", str(tmp_path / "tiny.png"), "--steps", "-5"], "--steps"),
    ]
    for args, needle in cases:
        proc = subprocess.run(
            [sys.executable, "-c", "from cli import main; main()", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 2, (args, proc.stderr)
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln]
        assert len(lines) == 1 and needle in lines[0], (args, proc.stderr)
    assert not any(tmp_path.glob("**/manifest.json"))
    assert runner.invoke(app, ["--help"]).exit_code == 0


def test_gaussian_budget_caps_the_scene_and_keeps_it_hole_free(kyoto, tmp_path):
    """With --max-gaussians the later views are seeded sparser: the scene stays under budget, still whole."""
    free = run_generate(_config(kyoto, max_side=128, steps=0), output=tmp_path / "a" / "s.ply", quiet=True)
    budget = int(len(free.gaussians) * 0.8)
    capped = run_generate(
        _config(kyoto, max_side=128, steps=0, fusion=FusionConfig(max_gaussians=budget)),
        output=tmp_path / "b" / "s.ply",
        quiet=True,
    )
    assert len(capped.gaussians) <= budget < len(free.gaussians)
    quality = json.loads((tmp_path / "b" / "manifest.json").read_text())["quality"]
    assert min(quality["alpha_coverage_between_views"]) > 0.98


def test_depth_flag_takes_a_depth_map_for_the_photo(kyoto, tmp_path):
    """`--depth FILE.npy` seeds the first view from the user's depth (metres), not from the prior."""
    from engine.images import load_photo

    h, w = load_photo(kyoto, 96).shape[:2]
    depth = np.full((h, w), 2.5, np.float32)
    np.save(tmp_path / "d.npy", depth)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from cli import main; main()",
            "generate",
            str(kyoto),
            "--mode",
            "single",
            "--max-side",
            "96",
            "--steps",
            "0",
            "--depth",
            str(tmp_path / "d.npy"),
            "-o",
            str(tmp_path / "s.ply"),
            "--quiet",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    saved = np.load(tmp_path / "views" / "depth_000.npy")
    np.testing.assert_allclose(saved, 2.5, rtol=1e-6)
    assert json.loads((tmp_path / "manifest.json").read_text())["first_view_depth"] == "file"


def test_ctrl_c_dropped_in_a_finaliser_still_stops_the_run():
    """A KeyboardInterrupt that lands in a __del__ is printed and dropped by Python, and the run would
    finish with exit 0. The remembered Ctrl-C is raised again at the next pipeline event."""
    from engine.interrupts import interrupts_that_stick

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even under nohup
    with interrupts_that_stick() as check:
        check(None)  # nothing pressed: no effect

        class _Dropper:
            def __del__(self):
                signal.raise_signal(signal.SIGINT)  # its KeyboardInterrupt is swallowed here

        _Dropper()
        with pytest.raises(KeyboardInterrupt):
            check(None)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    signal.signal(signal.SIGINT, before)
