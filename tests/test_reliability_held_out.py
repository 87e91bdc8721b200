"""Reliability, second pass (issue 20): the classes a held-out adversarial pass broke.

Files a user loses (the photo overwritten by the run's input.png, viewer Save over run files and from other
origins, --resume continuing another run's state or ignoring flags, a damaged checkpoint replacing a good
scene, torn videos), tracebacks instead of one line, hangs and unbounded memory. Each test fails on the
code before the fix. `test_fuzzed_matrix_through_cli_main` runs a hostile matrix through `cli.main` (forked
children, tests/reliability_harness.py) and fails on any exit code other than 0/2/130 or any traceback.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import struct
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reliability_harness import run_cli_many, save_photo

from splat.errors import StitchError

TINY = ["--mode", "single", "--max-side", "64", "--steps", "2", "-q"]


def _generate(photo: Path, out: Path, *extra: str, callbacks=()) -> None:
    """A tiny run through the library (same code path as the CLI, in this process)."""
    from engine.config import generate_config_from_cli
    from engine.run import run_generate

    mode = "stage" if "stage" in extra else "single"
    config = generate_config_from_cli(
        photo=photo,
        prompt="",
        mode=mode,
        path=None,
        seed=0,
        max_side=64,
        depth_file=None,
        steps=2,
        preset="offline",
        outpainter="",
        depth_backend="",
        model_path=None,
    )
    run_generate(config, output=out, quiet=True, extra_callbacks=callbacks)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished single-view run (the template the damaged-run cases copy)."""
    d = tmp_path_factory.mktemp("finished")
    photo = save_photo(d / "a.png", 96, 64, seed=1)
    _generate(photo, d / "run" / "scene.ply")
    return d / "run"


@pytest.fixture(scope="module")
def scene_file(finished_run) -> Path:
    return finished_run / "scene.ply"


# --- 1. files a user loses ----------------------------------------------------------------------------


def test_photo_and_foreign_files_in_the_run_folder_are_never_overwritten(tmp_path):
    d = tmp_path / "d"
    photo = save_photo(d / "input.png", 96, 64)
    before = photo.read_bytes()
    user = tmp_path / "u"
    save_photo(user / "photo.png", 96, 64)
    (user / "manifest.json").write_text('{"my": "notes"}')
    (user / "preview.png").write_bytes(b"my preview")
    views = tmp_path / "v"
    save_photo(views / "p.png", 96, 64)
    (views / "views").mkdir()
    (views / "views" / "view_000.png").write_bytes(b"mine")
    results = run_cli_many(
        [
            ["generate", str(photo), "-o", str(d / "scene.ply"), *TINY],
            ["generate", str(photo), "--run-dir", str(d), *TINY],
            ["generate", str(user / "photo.png"), "-o", str(user / "scene.ply"), *TINY],
            ["generate", str(views / "p.png"), "-o", str(views / "scene.ply"), *TINY],
        ],
        tmp_path / "cli",
    )
    for r in results:
        assert r.code == 2 and len(r.stderr_lines) == 1, (r.args, r.stderr)
    assert "would be overwritten" in results[0].stderr and "input.png" in results[0].stderr
    assert "no stitch run wrote" in results[2].stderr and "manifest.json" in results[2].stderr
    assert photo.read_bytes() == before
    assert sorted(p.name for p in d.iterdir()) == ["input.png"]
    assert (user / "manifest.json").read_text() == '{"my": "notes"}'
    assert (user / "preview.png").read_bytes() == b"my preview"
    assert (views / "views" / "view_000.png").read_bytes() == b"mine"


@pytest.mark.slow
def test_resume_never_continues_another_runs_state(tmp_path):
    """Finish A in D, start B in D and stop it before its first checkpoint: --resume D builds B's scene
    (the same bytes as an uninterrupted B), never reports A's as finished."""
    photo_a = save_photo(tmp_path / "a.png", 96, 64, seed=1)
    photo_b = save_photo(tmp_path / "b.png", 96, 64, seed=2)
    d = tmp_path / "D"
    _generate(photo_a, d / "scene.ply")
    scene_a = (d / "scene.ply").read_bytes()

    def stop(event) -> None:
        if event.kind == "view_started":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _generate(photo_b, d / "scene.ply", callbacks=[stop])
    [r] = run_cli_many([["generate", "--resume", str(d), "-q"]], tmp_path / "cli")
    assert r.code == 0, r.stderr
    _generate(photo_b, tmp_path / "B" / "scene.ply")
    assert (d / "scene.ply").read_bytes() != scene_a
    assert (d / "scene.ply").read_bytes() == (tmp_path / "B" / "scene.ply").read_bytes()
    manifest = json.loads((d / "manifest.json").read_text())
    state = json.loads((d / "checkpoint" / "state.json").read_text())
    assert state["run_id"] == manifest["run_id"] and manifest["input"] == str(photo_b)


def test_resume_refuses_flags_that_disagree_with_the_run(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    scene = (run / "scene.ply").read_bytes()
    other = save_photo(tmp_path / "other.png", 96, 64, seed=9)
    results = run_cli_many(
        [
            ["generate", "--resume", str(run), "--seed", "5"],
            ["generate", "--resume", str(run), "--mode", "360"],
            ["generate", "--resume", str(run), "--steps", "50"],
            ["generate", str(other), "--resume", str(run)],
        ],
        tmp_path / "cli",
    )
    for r, flag in zip(results, ["--seed", "--mode", "--steps", "other.png"], strict=True):
        assert r.code == 2 and len(r.stderr_lines) == 1 and flag in r.stderr, (r.args, r.stderr)
    assert (run / "scene.ply").read_bytes() == scene


DAMAGES = ("empty", "int", "shape", "missing", "nan")


def test_damaged_checkpoint_never_replaces_a_finished_scene(finished_run, tmp_path):
    """Emptied, retyped, reshaped, incomplete or NaN checkpoint tensors: --resume and refine refuse with one
    line and the finished scene.ply keeps its bytes (it used to be replaced, exit 0)."""
    from safetensors.torch import load_file, save_file

    cases, runs = [], {}
    for damage in DAMAGES:
        run = tmp_path / damage
        shutil.copytree(finished_run, run)
        ckpt = next((run / "checkpoint").glob("gaussians_*.safetensors"))
        tensors = load_file(str(ckpt))
        if damage == "empty":
            tensors = {k: v[:0].contiguous() for k, v in tensors.items()}
        elif damage == "int":
            tensors = {k: v.to(torch.int32) for k, v in tensors.items()}
        elif damage == "shape":
            tensors["means"] = tensors["means"][:, :2].contiguous()
        elif damage == "missing":
            del tensors["quats"]
        else:
            tensors["opacities"][0] = float("nan")
        save_file(tensors, str(ckpt))
        runs[damage] = (run, (run / "scene.ply").read_bytes())
        cases += [["generate", "--resume", str(run), "-q"], ["refine", str(run), "--steps", "1", "-q"]]
    for r in run_cli_many(cases, tmp_path / "cli"):
        assert r.code == 2 and len(r.stderr_lines) == 1 and "damaged" in r.stderr, (r.args, r.stderr)
    for run, scene in runs.values():
        assert (run / "scene.ply").read_bytes() == scene


def test_viewer_saves_paths_in_their_own_folder_and_never_over_run_files(tmp_path):
    from engine.trajectory import trajectory
    from viewer.path_recorder import PathRecorder, check_path_name
    from viewer.server import ViewerConfig

    for name in ("manifest.json", "MANIFEST.json", "state.json", "../x.json", "a/b.json"):
        with pytest.raises(StitchError):
            check_path_name(name)
    assert ViewerConfig().path_dir != Path(".")
    recorder = PathRecorder.__new__(PathRecorder)  # no viser server needed for save()
    recorder.directory = tmp_path / "run" / "paths"
    recorder.keyframes = trajectory("stage", 64, 48)
    import threading

    recorder._lock = threading.Lock()

    class _Info:
        content = ""

    recorder.info = _Info()
    saved = recorder.save("tour.json")
    assert saved == tmp_path / "run" / "paths" / "tour.json" and json.loads(saved.read_text())["cameras"]


def test_viewer_checks_origin_and_host_of_websocket_clients():
    from viewer.netguard import origin_allowed

    assert origin_allowed(None, "127.0.0.1:8080", "127.0.0.1")  # a script, not a browser
    assert origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080", "127.0.0.1")
    assert origin_allowed("http://localhost:8081", "localhost:8081", "127.0.0.1")
    assert not origin_allowed("https://evil.example", "127.0.0.1:8080", "127.0.0.1")
    assert not origin_allowed("http://127.0.0.1:9999", "127.0.0.1:8080", "127.0.0.1")
    assert not origin_allowed("null", "127.0.0.1:8080", "127.0.0.1")
    # DNS rebinding: the page's own name resolves to 127.0.0.1, Origin and Host agree, Host is not loopback
    assert not origin_allowed("http://evil.example:8080", "evil.example:8080", "127.0.0.1")
    assert origin_allowed("http://192.168.1.5:8080", "192.168.1.5:8080", "0.0.0.0")


def test_live_viewer_refuses_a_foreign_origin_handshake(tmp_path):
    pytest.importorskip("viser")
    import asyncio

    import websockets
    from websockets.asyncio.client import connect

    from viewer.server import LiveViewer, ViewerConfig

    viewer = LiveViewer(ViewerConfig(host="127.0.0.1", port=0, path_dir=tmp_path / "paths"))
    try:
        url = f"ws://127.0.0.1:{viewer.port}"

        async def handshake(origin: str | None) -> str:
            try:
                async with connect(url, origin=origin, subprotocols=["viser-v1"], open_timeout=10):
                    return "open"
            except websockets.exceptions.InvalidStatus as exc:
                return str(exc.response.status_code)

        assert asyncio.run(handshake("https://evil.example")) == "403"
        assert asyncio.run(handshake(f"http://127.0.0.1:{viewer.port}")) == "open"
    finally:
        viewer.stop()


def _frames(n: int, w: int = 64, h: int = 48, fail_at: int | None = None):
    for i in range(n):
        if i == fail_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        frame = np.zeros((h, w, 3), np.uint8)
        frame[:, : (i * 7) % w] = (255, 128, 0)
        yield frame


def test_video_writes_are_atomic_and_name_the_file(tmp_path):
    from engine.tools.video import write_video

    good = write_video(_frames(5), tmp_path / "v.gif", fps=10)
    before = good.read_bytes()
    with pytest.raises(StitchError, match=r"v\.gif.*No space left"):
        write_video(_frames(5, fail_at=3), tmp_path / "v.gif", fps=10)
    assert good.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.gif"]  # no temp file left
    with Image.open(good) as gif:
        assert gif.n_frames == 5
        gif.seek(4)
        assert np.asarray(gif.convert("RGB"))[0, 0].tolist() == [255, 128, 0]


def test_truncated_mp4_is_detected(tmp_path):
    from engine.tools.video import _check_mp4, ffmpeg_available, write_video

    if not ffmpeg_available():
        pytest.skip("no ffmpeg in this install")
    mp4 = write_video(_frames(4), tmp_path / "v.mp4", fps=10)
    _check_mp4(mp4)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(mp4.read_bytes()[: mp4.stat().st_size - 40])  # the trailer (moov) did not make it
    with pytest.raises(OSError):
        _check_mp4(cut)


def _peak_rss_mib(fn) -> float:
    """Peak resident memory a forked child adds while running fn (minus a child that does nothing)."""

    def child(work) -> float:
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                work()
            except BaseException:
                code = 1
            os._exit(code)
        _, status, usage = os.wait4(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        return usage.ru_maxrss / 1024.0

    return child(fn) - child(lambda: None)


def test_gif_memory_stays_flat_with_many_frames(tmp_path):
    from engine.tools.video import write_video

    grown = _peak_rss_mib(lambda: write_video(_frames(300, 320, 240), tmp_path / "long.gif", fps=30))
    all_frames = 300 * 320 * 240 * 3 / 2**20  # 66 MiB of RGB; Pillow's save_all kept every frame
    assert grown < all_frames / 3, (grown, all_frames)
    with Image.open(tmp_path / "long.gif") as gif:
        assert gif.n_frames == 300


# --- 2. bounded inputs ---------------------------------------------------------------------------------


def test_camera_path_rejects_bad_last_row_and_huge_numbers(tmp_path):
    from splat.formats.camera_path import load_camera_path

    cases = {
        "row": {"cameras": [{"world_to_camera": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]}]},
        "bigint": {"cameras": [{"yaw": 10**400}]},
        "width": {"width": 10**400, "cameras": [{"yaw": 0}]},
        "hugew": {"width": 1e300, "cameras": [{"yaw": 0}]},
    }
    for name, data in cases.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
        with pytest.raises(StitchError):
            load_camera_path(tmp_path / f"{name}.json", 64, 48)
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "digits.json").write_text('{"cameras": [{"yaw": ' + "9" * 5000 + "}]}")
    for name in ("deep", "digits"):
        with pytest.raises(StitchError):
            load_camera_path(tmp_path / f"{name}.json", 64, 48)


def test_photo_decoding_limits(tmp_path):
    from engine.images import load_photo

    strip = tmp_path / "strip.png"
    Image.fromarray(np.full((32, 4000, 3), 128, np.uint8)).save(strip)
    with pytest.raises(StitchError, match="elongated"):
        load_photo(strip, 384)
    grad = np.tile(np.linspace(0.0, 1.0, 96, dtype=np.float32), (64, 1))
    tiff = tmp_path / "float.tif"
    Image.fromarray(grad, mode="F").save(tiff)
    image = load_photo(tiff, 96)
    assert image.mean() > 0.3 and image.max() > 0.95  # not all black
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    with pytest.raises(StitchError, match="regular file"):
        load_photo(fifo, 64)


def test_big_photo_is_box_reduced_before_mode_conversion(tmp_path):
    """A 16-bit PNG far above the view size: the float copies happen at the reduced size."""
    from engine.images import load_photo

    big = tmp_path / "big16.png"
    arr = (np.add.outer(np.arange(1200), np.arange(1600)) * 13 % 65535).astype(np.uint16)
    Image.fromarray(arr).save(big)
    tracemalloc.start()
    image = load_photo(big, 96)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert image.shape[1] == 96
    assert peak < 1200 * 1600 * 4 * 1.5, peak  # was several full-size float32 copies (> 3x this)


def test_scene_readers_cap_points_and_bytes_before_reading(tmp_path, monkeypatch):
    import splat.formats.scene_arrays as sa
    from splat.formats.io import load_scene, save_scene
    from splat.gaussians import Gaussians

    n = 2000
    params = {
        "means": torch.randn(n, 3),
        "scales": torch.zeros(n, 3) - 3,
        "quats": torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
        "opacities": torch.zeros(n),
        "sh0": torch.zeros(n, 1, 3),
        "shN": torch.zeros(n, 0, 3),
    }
    g = Gaussians(params)
    for suffix in (".spz", ".splat", ".ply"):
        save_scene(g, tmp_path / f"s{suffix}")
    monkeypatch.setattr(sa, "MAX_SCENE_POINTS", 1000)
    for suffix in (".spz", ".splat", ".ply"):
        with pytest.raises(StitchError, match="more than the 1,000"):
            load_scene(tmp_path / f"s{suffix}")
    monkeypatch.setattr(sa, "MAX_SCENE_BYTES", 1000)
    with pytest.raises(StitchError, match="GiB"):
        load_scene(tmp_path / "s.ply")


def test_viewer_render_size_is_bounded_whatever_the_client_aspect():
    from viewer.background import render_height

    assert render_height(256, 1 / 1000) <= 4 * 256
    assert render_height(256, 1000.0) >= 8
    assert render_height(256, float("nan")) == 192
    assert render_height(256, 4 / 3) == 192


def test_refine_step_is_never_cut_in_half_by_ctrl_c():
    from engine.tools.refine import _whole_step

    done = []
    with pytest.raises(KeyboardInterrupt), _whole_step():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("rest of the step")
    assert done == ["rest of the step"]


def test_interrupt_message_names_resume_only_for_generate(monkeypatch):
    import cli

    monkeypatch.setattr(sys, "argv", ["stitch", "view", "x.ply"])
    assert "--resume" not in cli._interrupted_message()
    monkeypatch.setattr(sys, "argv", ["stitch", "generate", "p.png"])
    assert "--resume" in cli._interrupted_message()


# --- 3. the fuzzed matrix through cli.main -------------------------------------------------------------


def _png_header_only(path: Path, width: int, height: int, bit_depth: int = 16, colour: int = 0) -> Path:
    """A PNG whose IHDR claims width x height (16-bit grey) and whose pixel data is one empty row."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


def _damaged_runs(finished_run: Path, root: Path) -> dict[str, Path]:
    """Copies of a finished run, each damaged one way."""
    runs = {}

    def copy(name: str) -> Path:
        target = root / name
        shutil.copytree(finished_run, target)
        runs[name] = target
        return target

    def edit_manifest(name: str, fn) -> None:
        run = copy(name)
        manifest = json.loads((run / "manifest.json").read_text())
        fn(manifest)
        (run / "manifest.json").write_text(json.dumps(manifest))

    edit_manifest("max_side_abc", lambda m: m["config"].__setitem__("max_side", "abc"))
    edit_manifest("sh_degree_9", lambda m: m["config"].__setitem__("sh_degree", 9))
    edit_manifest("config_list", lambda m: m.__setitem__("config", [1, 2]))
    edit_manifest("optim_str", lambda m: m["config"]["optim"].__setitem__("steps_per_view", "ten"))
    edit_manifest("cameras_empty_objects", lambda m: m.__setitem__("cameras", [{}, {}]))
    edit_manifest("cameras_not_list", lambda m: m.__setitem__("cameras", {"a": 1}))
    edit_manifest("exports_list", lambda m: m.__setitem__("exports", [1]))
    edit_manifest("camera_bad_row", lambda m: m["cameras"][0]["world_to_camera"].__setitem__(3, [0, 0, 1, 1]))
    for name, state in (
        ("state_list", [1, 2]),
        ("state_views_str", {"version": 1, "views_done": "1", "gaussians": "gaussians_000.safetensors"}),
        ("state_views_many", {"version": 1, "views_done": 99, "gaussians": "gaussians_000.safetensors"}),
        (
            "state_timings_str",
            {"version": 1, "views_done": 1, "gaussians": "gaussians_000.safetensors", "timings": "x"},
        ),
    ):
        run = copy(name)
        old = json.loads((run / "checkpoint" / "state.json").read_text())
        if isinstance(state, dict) and "run_id" in old:
            state["run_id"] = old["run_id"]
        (run / "checkpoint" / "state.json").write_text(json.dumps(state))
    run = copy("checkpoint_missing_file")
    for f in (run / "checkpoint").glob("*.safetensors"):
        f.unlink()
    (run / "scene.ply").unlink()  # video/view fall back to the checkpoint
    return runs


@pytest.mark.slow
def test_fuzzed_matrix_through_cli_main(finished_run, scene_file, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    photo = save_photo(src / "photo.png", 96, 64)
    paths = {
        "deep": "[" * 100_000 + "]" * 100_000,
        "digits": '{"cameras": [{"yaw": ' + "9" * 5000 + "}]}",
        "bigint": json.dumps({"cameras": [{"yaw": 10**300}]}),
        "bigwidth": json.dumps({"width": 10**300, "cameras": [{"yaw": 0}]}),
        "floatwidth": json.dumps({"width": 1e308, "cameras": [{"yaw": 0}]}),
        "lastrow": json.dumps(
            {"cameras": [{"world_to_camera": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]}]}
        ),
        "c2wrow": json.dumps(
            {"cameras": [{"camera_to_world": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1]]}]}
        ),
        "focal": json.dumps({"focal": 1e308, "width": 1e-300, "cameras": [{"yaw": 0}]}),
        "types": json.dumps({"cameras": [{"yaw": "left"}, {"position": "x", "yaw": 1}]}),
    }
    for name, text in paths.items():
        (src / f"{name}.json").write_text(text)
    os.mkfifo(src / "fifo.jpg")
    _png_header_only(src / "depth_huge.png", 20000, 20000)
    with open(src / "sparse.ply", "wb") as f:
        f.truncate(100 << 30)  # sparse: 100 GB apparent size, no blocks
    with open(src / "sparse.splat", "wb") as f:
        f.truncate(100 << 30)
    # A truthful-ratio header: 11M points (209 MB) from a 200 kB stream passes the 1100x ratio check.
    spz_header = struct.pack("<IIIBBBB", 0x5053474E, 2, 11_000_000, 0, 12, 0, 0)
    import gzip

    noise = np.random.default_rng(0).bytes(200_000)
    (src / "many.spz").write_bytes(gzip.compress(spz_header + noise, compresslevel=1))
    configs = {
        "list": [1, 2],
        "batch_str": {"batch_size": "twelve"},
        "batch_zero": {"batch_size": 0},
        "device": {"device": "bogus"},
        "lr_str": {"lr": "fast"},
        "data_int": {"data": 5},
        "size_bad": {"data": {"size": [1, 2, 3]}},
    }
    for name, cfg in configs.items():
        (src / f"train_{name}.json").write_text(json.dumps(cfg))
    ck = src / "trainout" / "checkpoints"
    ck.mkdir(parents=True)
    (ck / "latest.json").write_text("{not json")
    (src / "train_resume.json").write_text(json.dumps({"out_dir": str(src / "trainout")}))
    runs = _damaged_runs(finished_run, tmp_path / "runs")

    cases: list[list[str]] = []
    for name in paths:
        cases.append(
            ["render", str(scene_file), "--camera", str(src / f"{name}.json"), "-o", str(tmp_path / "r.png")]
        )
        cases.append(
            [
                "generate",
                str(photo),
                "--path",
                str(src / f"{name}.json"),
                "-o",
                str(tmp_path / f"gen_{name}" / "scene.ply"),
                *TINY,
            ]
        )
    cases += [
        ["generate", str(src / "fifo.jpg"), "-o", str(tmp_path / "fifo" / "scene.ply"), *TINY],
        [
            "generate",
            str(photo),
            "--depth-file",
            str(src / "depth_huge.png"),
            "-o",
            str(tmp_path / "dh" / "scene.ply"),
            *TINY,
        ],
        ["info", str(src / "sparse.ply")],
        ["info", str(src / "sparse.splat")],
        ["info", str(src / "many.spz")],
        ["render", str(src / "sparse.ply"), "-o", str(tmp_path / "s.png")],
        ["refine", str(finished_run), "--device", "bogus", "-q"],
        ["refine", str(finished_run), "--depth-weight", "nan", "-q"],
        ["refine", str(finished_run), "--depth-weight", "-1", "-q"],
        ["view", str(scene_file), "--port", "65536"],
        ["view", str(scene_file), "--port", "-1"],
        ["view", str(scene_file), "--host", "192.0.2.1"],
        ["view", str(scene_file), "--host", "nohost.invalid"],
        ["video", str(scene_file), "--frames", "1", "-o", str(tmp_path / "v.gif")],
        ["video", str(scene_file), "--path", str(src / "lastrow.json"), "-o", str(tmp_path / "v2.gif")],
        ["train", "fit", "--resume", str(src / "train_resume.json")],
    ]
    cases += [["train", "fit", str(src / f"train_{name}.json")] for name in configs]
    for run in runs.values():
        cases += [
            ["generate", "--resume", str(run), "-q"],
            ["video", str(run), "--frames", "2", "--width", "32", "-o", str(tmp_path / f"{run.name}.gif")],
            ["refine", str(run), "--steps", "1", "-q"],
        ]
    results = run_cli_many(cases, tmp_path / "cli", case_timeout=90)
    bad = [
        (r.args, r.code, r.stderr[-400:])
        for r in results
        if r.code not in (0, 2, 130) or "Traceback" in r.stderr
    ]
    assert not bad, bad
    refusals = [r for r in results if r.code == 2]
    assert all(len(r.stderr_lines) == 1 and r.stderr.startswith("error: ") for r in refusals), [
        (r.args, r.stderr) for r in refusals if len(r.stderr_lines) != 1
    ]
    by_args = {" ".join(r.args): r for r in results}
    must_refuse = [
        "info " + str(src / "sparse.ply"),
        "info " + str(src / "many.spz"),
        "view " + str(scene_file) + " --port 65536",
        "view " + str(scene_file) + " --host 192.0.2.1",
        "view " + str(scene_file) + " --host nohost.invalid",
    ]
    for key in must_refuse:
        assert by_args[key].code == 2, (key, by_args[key].stderr)
    for name in runs:  # every damaged run is refused by --resume (never "finished" from bad state)
        r = by_args[f"generate --resume {tmp_path / 'runs' / name} -q"]
        assert r.code == 2, (name, r.stderr)
    # a refused generate leaves no run folder marked "running"
    for name in paths:
        manifest = tmp_path / f"gen_{name}" / "manifest.json"
        assert not manifest.exists() or json.loads(manifest.read_text())["status"] == "finished", name
