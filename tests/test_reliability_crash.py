"""Reliability: a full disk, SIGKILL and Ctrl-C at random points never cost a finished view, never leave a
torn file in place of a good one, and `--resume` then finishes the very scene an uninterrupted run makes, byte
for byte.
Also: same seed and inputs -> byte-identical .ply across processes.

Bounded by default (6 full-disk points, 3 interruptions); STITCH_RELIABILITY_LONG=1 fails the disk at every
write of the run and interrupts 10 times.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_in_process import run_cli
from reliability_harness import CLI, REPO, save_photo

LONG = os.environ.get("STITCH_RELIABILITY_LONG") == "1"
RUN_360 = ["--mode", "360", "--max-side", "64", "--steps", "2", "--seed", "7", "-q"]
RUN_STAGE = ["--mode", "stage", "--max-side", "64", "--steps", "2", "--seed", "3", "-q"]
FINAL_NAME = re.compile(r"^\.?(?P<name>[A-Za-z0-9_]+\.(?:png|npy|json|ply|safetensors))")
TEMP_NAME = re.compile(r"(^\..+\.tmp\d*$)|(\.tmp$)")


# --- what a run directory must look like at any moment ------------------------------------------------


def temp_files(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob("*") if p.is_file() and TEMP_NAME.search(p.name)]


def assert_run_dir_whole(run_dir: Path, allow_temp: bool) -> int:
    """Every file under its final name is complete (parses in full); returns the checkpoint's views_done."""
    from safetensors.torch import load_file

    from splat.formats.io import load_scene

    manifest = run_dir / "manifest.json"
    if manifest.exists():
        assert isinstance(json.loads(manifest.read_text()), dict)
    views_done = 0
    state_path = run_dir / "checkpoint" / "state.json"
    if state_path.exists():
        state = json.loads(state_path.read_text())
        views_done = state["views_done"]
        tensors = load_file(str(run_dir / "checkpoint" / state["gaussians"]))
        assert tensors["means"].shape[0] > 0
        for k in range(views_done):
            for kind, suffix in [("view", ".png"), ("image", ".npy"), ("depth", ".npy"), ("new", ".png")]:
                assert (run_dir / "views" / f"{kind}_{k:03d}{suffix}").is_file(), (kind, k)
    for png in [*run_dir.glob("*.png"), *(run_dir / "views").glob("*.png")]:
        with Image.open(png) as img:
            img.load()  # a torn PNG fails here
    for npy in (run_dir / "views").glob("*.npy"):
        np.load(npy, allow_pickle=False)
    if (run_dir / "scene.ply").exists():
        assert len(load_scene(run_dir / "scene.ply")) > 0
    if not allow_temp:
        assert temp_files(run_dir) == []
    return views_done


# --- a disk that fills up -------------------------------------------------------------------------------


class FullDisk:
    """Writes under `root` draw from a byte budget; the write that crosses it stores what fits and then fails
    like a full disk: OSError(ENOSPC) from Python file writes, SafetensorError from safetensors (what both
    raise on a real full tmpfs). budget=None records every write instead: log = [(file, offset, nbytes)]."""

    def __init__(self, root: Path, budget: int | None = None) -> None:
        self.root = str(root.resolve())
        self.budget = budget
        self.used = 0
        self.log: list[tuple[str, int, int]] = []
        self.tripped: str | None = None

    def covers(self, path) -> bool:
        return os.path.abspath(os.fsdecode(path)).startswith(self.root + os.sep)

    def take(self, path: str, n: int) -> int:
        allowed = n if self.budget is None else max(0, min(n, self.budget - self.used))
        name = os.path.relpath(os.path.abspath(path), self.root)
        if self.log and self.log[-1][0] == name:
            f, off, size = self.log[-1]
            self.log[-1] = (f, off, size + allowed)
        else:
            self.log.append((name, self.used, allowed))
        self.used += allowed
        if allowed < n and self.tripped is None:
            self.tripped = name
        return allowed

    def install(self, monkeypatch) -> None:
        import builtins

        import engine.rundir

        real_open, real_save_file = io.open, engine.rundir.save_file
        disk = self

        def metered_open(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            if any(c in mode for c in "wax+"):
                path = os.readlink(f"/proc/self/fd/{file}") if isinstance(file, int) else os.fsdecode(file)
                if disk.covers(path):
                    return _MeteredFile(f, disk, path)
            return f

        def metered_save_file(tensors, filename, metadata=None):
            from safetensors import SafetensorError

            real_save_file(tensors, filename, metadata)
            n = os.path.getsize(filename)
            allowed = disk.take(filename, n) if disk.covers(filename) else n
            if allowed < n:
                os.truncate(filename, allowed)
                raise SafetensorError(
                    "Error while serializing: I/O error: No space left on device (os error 28)"
                )

        monkeypatch.setattr(builtins, "open", metered_open)
        monkeypatch.setattr(io, "open", metered_open)
        monkeypatch.setattr(engine.rundir, "save_file", metered_save_file)


class _MeteredFile:
    def __init__(self, f, disk: FullDisk, path: str) -> None:
        self._f, self._disk, self._path = f, disk, path

    def write(self, data):
        raw = data.encode() if isinstance(data, str) else memoryview(data).cast("B")
        allowed = self._disk.take(self._path, len(raw))
        if allowed < len(raw):
            if allowed:
                self._f.write(data[:allowed])
            self._f.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._path)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __iter__(self):
        return iter(self._f)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def cli_in_process(args: list[str], capsys) -> tuple[int, list[str]]:
    """`stitch ARGS` through cli.main in this process -> (exit code, stderr lines)."""
    capsys.readouterr()  # only this command's output
    code, _, err = run_cli(args, capsys)
    return code, [line for line in err.splitlines() if line.strip()]


def _disk_events(log: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """The recorded writes with their final file names: [(final name, offset, nbytes)]."""
    out = []
    for name, offset, size in log:
        folder, base = os.path.split(name)
        m = FINAL_NAME.match(base)
        out.append((os.path.join(folder, m.group("name") if m else base), offset, size))
    return out


def _pick_points(events: list[tuple[str, int, int]]) -> list[tuple[str, int]]:
    """(label, byte budget) pairs: the disk fills up halfway through those writes."""
    points = []
    seen: dict[str, int] = {}
    for name, offset, size in events:
        seen[name] = seen.get(name, 0) + 1
        label = f"{name}#{seen[name]}"
        if size > 0:
            points.append((label, offset + max(1, size // 2)))
    if LONG:
        return points
    wanted = [
        "manifest.json#1",  # before anything can be resumed
        "views/depth_000.npy#1",
        "checkpoint/gaussians_001.safetensors#1",  # the checkpoint after view 1
        "checkpoint/state.json#2",
        "scene.ply#1",
        "manifest.json#2",  # the final manifest over the running one
    ]
    chosen = [p for p in points if p[0] in wanted]
    assert len(chosen) == len(wanted), [p[0] for p in points]
    return chosen


@pytest.fixture(scope="module")
def stage_photo(tmp_path_factory) -> Path:
    return save_photo(tmp_path_factory.mktemp("photo") / "photo.png", 96, 64, seed=3)


def test_full_disk_at_each_write_fails_cleanly_and_resumes(stage_photo, tmp_path, monkeypatch, capsys):
    torch.set_num_threads(1)
    ref_dir = tmp_path / "ref"
    with monkeypatch.context() as m:
        recorder = FullDisk(ref_dir)
        recorder.install(m)
        code, err = cli_in_process(
            ["generate", str(stage_photo), *RUN_STAGE, "-o", str(ref_dir / "scene.ply")], capsys
        )
    assert code == 0, err
    reference = (ref_dir / "scene.ply").read_bytes()
    points = _pick_points(_disk_events(recorder.log))
    report = []
    for i, (label, budget) in enumerate(points):
        run_dir = tmp_path / f"full{i}"
        args = ["generate", str(stage_photo), *RUN_STAGE, "-o", str(run_dir / "scene.ply")]
        with monkeypatch.context() as m:
            disk = FullDisk(run_dir, budget)
            disk.install(m)
            code, err = cli_in_process(args, capsys)
        assert disk.tripped is not None, label
        assert code == 2 and len(err) == 1, (label, err)
        assert err[0].startswith("error: ") and ("No space left" in err[0] or "os error 28" in err[0]), (
            label,
            err,
        )
        assert_run_dir_whole(run_dir, allow_temp=False)  # nothing torn, no temp files left behind
        if (run_dir / "manifest.json").exists():
            assert "--resume" in err[0], err
            code, err = cli_in_process(["generate", "--resume", str(run_dir), "-q"], capsys)
        else:  # the disk filled before the run existed: the message says to run the same command again
            assert "run the same command again" in err[0], err
            code, err = cli_in_process(args, capsys)
        assert code == 0, (label, err)
        assert_run_dir_whole(run_dir, allow_temp=False)
        assert (run_dir / "scene.ply").read_bytes() == reference, label
        assert json.loads((run_dir / "manifest.json").read_text())["status"] == "finished"
        report.append(label)
    assert len(report) == len(points)


# --- SIGKILL / Ctrl-C at random points, then --resume ---------------------------------------------------


@pytest.fixture(scope="module")
def reference_360(tmp_path_factory) -> tuple[Path, Path, float]:
    """An uninterrupted 360 run in its own process -> (photo, scene.ply, seconds per view)."""
    d = tmp_path_factory.mktemp("ref360")
    photo = save_photo(d / "photo.png", 96, 64, seed=5)
    out = d / "run" / "scene.ply"
    proc = subprocess.run(
        [*CLI, "generate", str(photo), *RUN_360, "-o", str(out)], cwd=REPO, capture_output=True
    )
    assert proc.returncode == 0, proc.stderr.decode()
    manifest = json.loads((out.parent / "manifest.json").read_text())
    return photo, out, manifest["wall_seconds_last_session"] / len(manifest["cameras"])


def _views_done(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "checkpoint" / "state.json").read_text())["views_done"]
    except (OSError, ValueError, KeyError):
        return 0


def test_kill_and_ctrl_c_at_random_points_then_resume_gives_the_same_scene(reference_360, tmp_path):
    """A chain of interruptions (SIGKILL, SIGINT, SIGKILL, ...), each at a seeded random moment inside a
    seeded random view (or inside the final writes), each followed by --resume; the last resume finishes.
    SIGKILL may leave a temp file (never under a final name); Ctrl-C leaves none and says how to resume."""
    photo, reference, per_view = reference_360
    n_views = 13
    rng = np.random.default_rng(2024)
    kills = 10 if LONG else 3
    targets = sorted(rng.choice(np.arange(1, n_views + 1), size=kills, replace=False).tolist())
    fractions = rng.uniform(0.0, 1.0, size=kills).tolist()
    signals = [signal.SIGINT if i % 2 else signal.SIGKILL for i in range(kills)]
    run_dir = tmp_path / "run"
    first = [*CLI, "generate", str(photo), *RUN_360, "-o", str(run_dir / "scene.ply")]
    resume = [*CLI, "generate", "--resume", str(run_dir), "-q"]
    interrupted = []
    history: list[tuple] = []  # (target view, fraction, signal, exit code, stderr tail) for failure messages
    cmd = first
    for target, fraction, sig in zip(targets, fractions, signals, strict=True):
        if _views_done(run_dir) >= target:
            continue  # an earlier interruption landed past this point
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while proc.poll() is None and _views_done(run_dir) < target and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(fraction * per_view)
        sent = proc.poll() is None
        if sent:
            proc.send_signal(sig)
            interrupted.append((target, round(fraction, 2), sig.name))
        _, err = proc.communicate(timeout=120)
        history.append(
            (target, round(fraction, 2), sig.name, proc.returncode, err.decode(errors="replace")[-2000:])
        )
        assert b"Traceback" not in err, history
        if sent and sig == signal.SIGINT and proc.returncode not in (0, -signal.SIGINT):
            lines = err.decode().strip().splitlines()
            assert proc.returncode == 130 and len(lines) == 1 and "--resume" in lines[0], history
        if proc.returncode in (0, -signal.SIGINT):  # finished (Ctrl-C landed in interpreter shutdown)
            assert json.loads((run_dir / "manifest.json").read_text())["status"] == "finished", history
        temp_ok = not (sent and sig == signal.SIGINT)
        views_done = assert_run_dir_whole(run_dir, allow_temp=temp_ok)
        # The scene file is written only after the last view's checkpoint.
        assert not (run_dir / "scene.ply").exists() or views_done == n_views, history
        cmd = resume
    assert len(interrupted) >= max(1, kills // 2), history
    done = subprocess.run(resume, cwd=REPO, capture_output=True)
    assert done.returncode == 0, (done.stderr.decode(), history)
    assert_run_dir_whole(run_dir, allow_temp=False)
    assert (run_dir / "scene.ply").read_bytes() == reference.read_bytes(), history
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "finished"


# --- determinism ----------------------------------------------------------------------------------------


def test_360_same_seed_same_bytes_across_processes(reference_360, tmp_path):
    """The subprocess's scene (2 torch threads) equals this process's (1 thread), byte for byte; another
    seed gives another scene."""
    from engine.config import GenerateConfig, OptimConfig
    from engine.run import run_generate

    photo, reference, _ = reference_360
    torch.set_num_threads(1)
    cfg = GenerateConfig(photo=photo, mode="360", seed=7, max_side=64, optim=OptimConfig(steps_per_view=2))
    run_generate(cfg, output=tmp_path / "a" / "scene.ply", quiet=True)
    assert (tmp_path / "a" / "scene.ply").read_bytes() == reference.read_bytes()
    other = GenerateConfig(photo=photo, mode="360", seed=8, max_side=64, optim=OptimConfig(steps_per_view=2))
    run_generate(other, output=tmp_path / "b" / "scene.ply", quiet=True)
    assert (tmp_path / "b" / "scene.ply").read_bytes() != reference.read_bytes()
