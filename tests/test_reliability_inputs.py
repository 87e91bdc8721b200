"""Reliability: every bad input through the real CLI gives one line on stderr and exit code 2, or works.

The matrix (photos, prompts, flags, camera paths, depth files, scene files, run directories) runs once per
module through `run_cli_many` (the real `cli.main`, one forked process per case) and each case is its own
test. `python tests/test_reliability_inputs.py` prints the matrix as the README's Markdown table.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reliability_harness import REPO, CliResult, run_cli, run_cli_many, save_photo, synthetic_photo

OK = "works"
TINY = ["--max-side", "64", "--steps", "1", "--mode", "single", "-q"]
NON_UTF8_NAME = b"caf\xe9-\xff.jpg"  # Latin-1 bytes: not valid UTF-8


@dataclass(frozen=True)
class Case:
    name: str
    what: str  # README wording
    args: Callable[[dict[str, Path], Path], list]  # (files, out_dir) -> CLI arguments
    expect: str  # OK or a substring of the one-line error


def _gen(photo_key: str, *extra: str) -> Callable:
    return lambda f, out: ["generate", str(f[photo_key]), *TINY, *extra, "-o", str(out / "scene.ply")]


def _path(json_key: str) -> Callable:
    return lambda f, out: [
        "generate",
        str(f["good.jpg"]),
        "--path",
        str(f[json_key]),
        "--max-side",
        "64",
        "--steps",
        "1",
        "-q",
        "-o",
        str(out / "scene.ply"),
    ]


def _scene(cmd: str, key: str) -> Callable:
    def args(f, out):
        if cmd == "render":
            return ["render", str(f[key]), "-o", str(out / "r.png"), "--width", "32", "--height", "24"]
        if cmd == "export":
            return ["export", str(f[key]), "-o", str(out / "e.ply")]
        if cmd == "view":
            return ["view", str(f[key]), "--port", "0"]
        return ["info", str(f[key])]

    return args


PHOTOS = [
    Case("missing", "photo file does not exist", _gen("missing.jpg"), "does not exist"),
    Case("directory", "a directory instead of a photo", _gen("dir"), "is a directory"),
    Case("not-an-image", "text bytes named .jpg", _gen("notimage.jpg"), "not a readable image"),
    Case("truncated-jpeg", "JPEG cut in half", _gen("trunc.jpg"), "damaged or truncated"),
    Case("1x1", "1x1 PNG", _gen("1x1.png"), "at least 32 px"),
    Case("16x16", "16x16 PNG", _gen("16x16.png"), "at least 32 px"),
    Case("20000x20000-png", "PNG header claiming 20000x20000 (200 bytes)", _gen("huge.png"), "megapixels"),
    Case("20000x20000-jpeg", "JPEG header claiming 20000x20000", _gen("huge.jpg"), "megapixels"),
    Case("lying-png", "PNG header 9000x9000, no pixel data", _gen("lying.png"), "damaged or truncated"),
    Case("24mp-jpeg", "6000x4000 JPEG (decoded at 1/8 scale)", _gen("big.jpg"), OK),
    Case("16bit-png", "16-bit greyscale PNG", _gen("16bit.png"), OK),
    Case("cmyk-jpeg", "CMYK JPEG", _gen("cmyk.jpg"), OK),
    Case("rgba-png", "RGBA PNG (half transparent)", _gen("rgba.png"), OK),
    Case("greyscale", "greyscale PNG", _gen("grey.png"), OK),
    Case("palette", "palette PNG with transparency", _gen("palette.png"), OK),
    Case("webp", "WebP", _gen("photo.webp"), OK),
    Case("exif-rotated", "JPEG with EXIF orientation 6 (portrait)", _gen("exif.jpg"), OK),
    Case("bad-exif", "JPEG with a garbage EXIF block", _gen("badexif.jpg"), OK),
    Case("non-utf8-path", "file name with non-UTF-8 bytes", _gen("nonutf8"), OK),
]
PROMPTS_FLAGS = [
    Case(
        "empty-prompt",
        "empty prompt, stage mode",
        lambda f, out: [
            "generate",
            str(f["good.jpg"]),
            "--prompt",
            "",
            "--mode",
            "stage",
            "--max-side",
            "64",
            "--steps",
            "1",
            "-q",
            "-o",
            str(out / "scene.ply"),
        ],
        OK,
    ),
    Case("long-prompt", "prompt of 10,000 characters", _gen("good.jpg", "--prompt", "a" * 10_000), OK),
    Case(
        "huge-prompt",
        "prompt of 100,000 characters",
        _gen("good.jpg", "--prompt", "a" * 100_000),
        "longer than 10000",
    ),
    Case(
        "unicode-prompt",
        "prompt with emoji and control characters",
        _gen("good.jpg", "--prompt", "caf\u00e9 \U0001f3ef\t\x01"),
        OK,
    ),
    Case("unknown-mode", "--mode spiral", _gen("good.jpg", "--mode", "spiral"), "unknown mode"),
    Case("negative-steps", "--steps -5", _gen("good.jpg", "--steps", "-5"), "--steps must be >= 0"),
    Case("steps-not-int", "--steps abc", _gen("good.jpg", "--steps", "abc"), "Invalid value for '--steps'"),
    Case("unknown-option", "--bogus", _gen("good.jpg", "--bogus"), "No such option"),
    Case("max-side-0", "--max-side 0", _gen("good.jpg", "--max-side", "0"), "too small"),
    Case("negative-seed", "--seed -1", _gen("good.jpg", "--seed", "-1"), "--seed must be"),
    Case("huge-seed", "--seed 2**70", _gen("good.jpg", "--seed", str(2**70)), "--seed must be"),
    Case("unknown-preset", "--preset nope", _gen("good.jpg", "--preset", "nope"), "unknown preset"),
    Case(
        "output-not-ply",
        "-o scene.txt",
        lambda f, out: ["generate", str(f["good.jpg"]), *TINY, "-o", str(out / "scene.txt")],
        "must end in .ply",
    ),
    Case(
        "output-under-a-file",
        "-o inside a path that is a file",
        lambda f, out: ["generate", str(f["good.jpg"]), *TINY, "-o", str(f["good.jpg"] / "scene.ply")],
        "cannot create run directory",
    ),
    Case("no-photo", "no photo and no --resume", lambda f, out: ["generate", *TINY], "give a photo"),
    Case("unknown-command", "stitch nosuchcmd", lambda f, out: ["nosuchcmd"], "No such command"),
]
CAMERA_PATHS = [
    Case("path-ok", "valid camera path, 2 cameras", _path("ok.json"), OK),
    Case("path-missing-keys", "camera entry with no pose keys", _path("nokeys.json"), "needs one of"),
    Case("path-nan", "yaw = NaN", _path("nan.json"), "finite number"),
    Case("path-inf", "Infinity in world_to_camera", _path("inf.json"), "NaN or Inf"),
    Case("path-singular", "all-zero rotation", _path("singular.json"), "non-invertible"),
    Case("path-degenerate", "camera_to_world with a zero axis", _path("degenerate.json"), "not invertible"),
    Case("path-not-json", "not JSON", _path("notjson.json"), "not valid JSON"),
    Case("path-empty", "empty camera list", _path("empty.json"), "non-empty 'cameras'"),
    Case("path-wrong-type", "a JSON list, not an object", _path("list.json"), "non-empty 'cameras'"),
    Case("path-file-missing", "--path to a missing file", _path("missing.json"), "does not exist"),
]
DEPTH_FILES = [
    Case(
        "depth-missing",
        "--depth-file missing",
        _gen("good.jpg", "--depth-file", "/nonexistent/d.npy"),
        "does not exist",
    ),
    Case(
        "depth-pickle",
        "--depth-file .npy holding a pickled object",
        lambda f, out: _gen("good.jpg", "--depth-file", str(f["pickle.npy"]))(f, out),
        "not a plain .npy",
    ),
    Case(
        "depth-nan",
        "--depth-file .npy with NaN",
        lambda f, out: _gen("good.jpg", "--depth-file", str(f["nan.npy"]))(f, out),
        "NaN or Inf",
    ),
]
SCENE_FILES = [
    *[
        Case(f"info-{key}", f"stitch info: {what}", _scene("info", key), needle)
        for key, what, needle in [
            ("empty.ply", "empty .ply", "not a PLY file"),
            ("random.ply", "random bytes .ply", "not a PLY file"),
            ("trunc_header.ply", ".ply header cut short", "truncated"),
            ("trunc_body.ply", ".ply body cut short", "file truncated or header count wrong"),
            ("lying.ply", ".ply claiming 4e9 vertices", "file truncated or header count wrong"),
            ("nan.ply", ".ply full of NaN", "NaN/Inf"),
            ("listprop.ply", ".ply with a list property", "is a list"),
            ("hugeheader.ply", ".ply with a 200 kB header", "end_header"),
            ("odd.splat", ".splat of odd size", "not a multiple of 32"),
            ("nan.splat", ".splat with NaN", "NaN/Inf"),
            ("random.spz", "random bytes .spz", "not a .spz file"),
            ("trunc.spz", ".spz cut short", "truncated"),
            ("bomb.spz", ".spz gzip bomb (50 MB of zeros in 49 kB)", "cannot hold that much"),
            ("lying.spz", ".spz claiming 1e9 points", "cannot hold that much"),
            ("scene.txt", "unknown suffix", "unknown scene format"),
            ("dir.ply", "a directory named .ply", "not a regular file"),
            ("good.ply", "valid .ply", OK),
        ]
    ],
    *[
        Case(f"{cmd}-{key}", f"stitch {cmd}: {what}", _scene(cmd, key), needle)
        for cmd in ("render", "export", "view")
        for key, what, needle in [
            ("lying.ply", ".ply claiming 4e9 vertices", "file truncated or header count wrong"),
            ("nan.ply", ".ply full of NaN", "NaN/Inf"),
            ("bomb.spz", ".spz gzip bomb", "cannot hold that much"),
            ("odd.splat", ".splat of odd size", "not a multiple of 32"),
            ("missing.ply", "missing file", "no such file" if cmd != "view" else "does not exist"),
        ]
    ],
    Case(
        "render-bad-camera",
        "stitch render --camera nope",
        lambda f, out: ["render", str(f["good.ply"]), "-o", str(out / "r.png"), "--camera", "nope"],
        "neither a mode",
    ),
    Case(
        "render-zero-width",
        "stitch render --width 0",
        lambda f, out: ["render", str(f["good.ply"]), "-o", str(out / "r.png"), "--width", "0"],
        "out of range",
    ),
    Case("render-ok", "stitch render: valid .ply", _scene("render", "good.ply"), OK),
]


def _resume(key: str) -> Callable:
    return lambda f, out: ["generate", "--resume", str(f[key]), "-q"]


def _view_run(key: str) -> Callable:
    return lambda f, out: ["view", str(f[key]), "--port", "0"]


RUN_DIRS = [
    Case(
        "resume-not-a-run",
        "--resume on a plain folder",
        lambda f, out: ["generate", "--resume", str(out), "-q"],
        "no manifest.json",
    ),
    *[
        Case(f"{kind}-{key}", f"{label}: {what}", fn(key), needle)
        for kind, label, fn in (("resume", "--resume", _resume), ("view", "stitch view", _view_run))
        for key, what, needle in [
            ("run_list_manifest", "manifest.json is a JSON list", "not a JSON object"),
            ("run_bad_json", "manifest.json is not JSON", "is damaged"),
            ("run_state_traversal", "state.json names ../../etc/passwd", "checkpoint in"),
            ("run_state_int", "state.json names a number", "checkpoint in"),
            ("run_trunc_ckpt", "checkpoint .safetensors cut short", "checkpoint in"),
        ]
    ],
    Case(
        "resume-bad-config",
        "--resume: manifest config has an unknown key",
        _resume("run_bad_config"),
        "is damaged (config",
    ),
    Case(
        "resume-changed-input",
        "--resume: input.png replaced",
        _resume("run_changed_input"),
        "changed since the run started",
    ),
    Case("resume-finished", "--resume of a finished run", _resume("run_ok"), OK),
]

CASES = PHOTOS + PROMPTS_FLAGS + CAMERA_PATHS + DEPTH_FILES + SCENE_FILES + RUN_DIRS


# --- building the inputs ----------------------------------------------------------------------------


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose IHDR claims width x height over a tiny IDAT: costs nothing unless someone decodes it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _jpeg_claiming(path: Path, source: bytes, width: int, height: int) -> None:
    """A real JPEG whose SOF0 frame header is rewritten to claim width x height."""
    i = source.index(b"\xff\xc0")
    patched = bytearray(source)
    patched[i + 5 : i + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(patched))


class _Marker:
    """Unpickling this runs code that creates a file: the loaders must never do it."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def _scene_files(d: Path, files: dict[str, Path]) -> None:
    from splat.formats.io import save_scene
    from splat.gaussians import Gaussians

    g = torch.Generator().manual_seed(0)
    n = 50
    gaussians = Gaussians(
        {
            "means": torch.randn(n, 3, generator=g) + torch.tensor([0.0, 0.0, 3.0]),
            "scales": torch.randn(n, 3, generator=g) - 3.0,
            "quats": torch.randn(n, 4, generator=g),
            "opacities": torch.randn(n, generator=g),
            "sh0": torch.randn(n, 1, 3, generator=g),
            "shN": torch.zeros(n, 3, 3),
        }
    )
    for suffix in ("ply", "splat", "spz"):
        save_scene(gaussians, d / f"good.{suffix}")
    ply = (d / "good.ply").read_bytes()
    body = ply.index(b"end_header\n") + len(b"end_header\n")
    rng = np.random.default_rng(0)
    spz_header = struct.pack("<IIIBBBB", 0x5053474E, 2, 10**8, 0, 12, 0, 0)
    contents = {
        "empty.ply": b"",
        "random.ply": rng.bytes(5000),
        "trunc_header.ply": ply[: body - 20],
        "trunc_body.ply": ply[: body + 100],
        "lying.ply": ply.replace(b"element vertex 50\n", b"element vertex 4000000000\n"),
        "nan.ply": ply[:body] + np.full((len(ply) - body) // 4, np.nan, np.float32).tobytes(),
        "listprop.ply": ply.replace(b"property float x\n", b"property list uchar float x\n"),
        "hugeheader.ply": b"ply\nformat binary_little_endian 1.0\ncomment " + b"a" * 200_000 + b"\n",
        "odd.splat": (d / "good.splat").read_bytes()[:-5],
        "nan.splat": np.full(32, np.nan, np.float32).tobytes(),
        "random.spz": rng.bytes(3000),
        "trunc.spz": (d / "good.spz").read_bytes()[:40],
        "bomb.spz": gzip.compress(spz_header + b"\0" * 50_000_000),
        "lying.spz": gzip.compress(struct.pack("<IIIBBBB", 0x5053474E, 2, 10**9, 0, 12, 0, 0) + b"\0" * 100),
        "scene.txt": ply,
    }
    for name, data in contents.items():
        (d / name).write_bytes(data)
    (d / "dir.ply").mkdir()
    for name in [*contents, "good.ply", "dir.ply", "missing.ply"]:
        files[name] = d / name


def _run_dirs(d: Path, files: dict[str, Path]) -> None:
    """A finished single-view run, then damaged copies of it."""
    from engine.config import GenerateConfig, OptimConfig
    from engine.run import run_generate

    ok = d / "run_ok"
    cfg = GenerateConfig(
        photo=files["good.jpg"], mode="single", max_side=64, optim=OptimConfig(steps_per_view=1)
    )
    run_generate(cfg, output=ok / "scene.ply", quiet=True)
    files["run_ok"] = ok

    def damaged(name: str, fn) -> None:
        target = d / name
        shutil.copytree(ok, target)
        # No scene file, so `stitch view` must read the checkpoint.
        (target / "scene.ply").unlink()
        copied = {**manifest, "exports": {"ply": str(target / "scene.ply")}}
        (target / "manifest.json").write_text(json.dumps(copied))
        fn(target)
        files[name] = target

    state = json.loads((ok / "checkpoint" / "state.json").read_text())
    manifest = json.loads((ok / "manifest.json").read_text())

    def write_state(value):
        return lambda t: (t / "checkpoint" / "state.json").write_text(
            json.dumps({**state, "gaussians": value})
        )

    damaged("run_list_manifest", lambda t: (t / "manifest.json").write_text("[1, 2]"))
    damaged("run_bad_json", lambda t: (t / "manifest.json").write_text('{"config": '))
    damaged("run_state_traversal", write_state("../../../../../../etc/passwd"))
    damaged("run_state_int", write_state(5))

    def trunc_ckpt(t: Path) -> None:
        ckpt = t / "checkpoint" / state["gaussians"]
        ckpt.write_bytes(ckpt.read_bytes()[:100])

    damaged("run_trunc_ckpt", trunc_ckpt)
    bad_config = {**manifest, "config": {**manifest["config"], "bogus_key": 1}}
    damaged("run_bad_config", lambda t: (t / "manifest.json").write_text(json.dumps(bad_config)))
    damaged("run_changed_input", lambda t: save_photo(t / "input.png", 64, 40, seed=9))


def build_inputs(d: Path) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {"missing.jpg": d / "missing.jpg", "dir": d}
    good = save_photo(d / "good.jpg", 96, 64, quality=92)
    files["good.jpg"] = good
    data = good.read_bytes()
    (d / "notimage.jpg").write_bytes(b"hello, this is not a JPEG\n")
    (d / "trunc.jpg").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (1, 1)).save(d / "1x1.png")
    Image.new("RGB", (16, 16)).save(d / "16x16.png")
    _png_header_only(d / "huge.png", 20000, 20000)
    _jpeg_claiming(d / "huge.jpg", data, 20000, 20000)
    _png_header_only(d / "lying.png", 9000, 9000)
    Image.fromarray(synthetic_photo(96, 64)).resize((6000, 4000), Image.Resampling.NEAREST).save(
        d / "big.jpg", quality=80
    )
    pixels = synthetic_photo(96, 64)
    Image.fromarray(pixels[..., 1].astype(np.uint16) * 257).save(d / "16bit.png")
    Image.fromarray(pixels).convert("CMYK").save(d / "cmyk.jpg")
    rgba = np.dstack([pixels, np.full(pixels.shape[:2], 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    Image.fromarray(pixels).convert("L").save(d / "grey.png")
    palette = Image.fromarray(pixels).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    palette.info["transparency"] = 0
    palette.save(d / "palette.png", transparency=0)
    Image.fromarray(pixels).save(d / "photo.webp", quality=90)
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    img.save(d / "exif.jpg", exif=exif, quality=95)
    img.save(d / "badexif.jpg", exif=b"Exif\x00\x00" + b"\xff" * 64)
    nonutf8 = d / NON_UTF8_NAME.decode("utf-8", "surrogateescape")  # os.fsencode gives the raw bytes back
    nonutf8.write_bytes(data)
    for name in ("notimage.jpg", "trunc.jpg", "1x1.png", "16x16.png", "huge.png", "huge.jpg", "lying.png"):
        files[name] = d / name
    for name in ("big.jpg", "16bit.png", "cmyk.jpg", "rgba.png", "grey.png", "palette.png", "photo.webp"):
        files[name] = d / name
    files.update({"exif.jpg": d / "exif.jpg", "badexif.jpg": d / "badexif.jpg", "nonutf8": nonutf8})
    # Camera paths.
    paths = {
        "ok.json": json.dumps({"cameras": [{"yaw": 0}, {"yaw": 10, "pitch": 3}]}),
        "nokeys.json": json.dumps({"cameras": [{}]}),
        "nan.json": '{"cameras": [{"yaw": NaN}]}',
        "inf.json": '{"cameras": [{"world_to_camera": [[1,0,0,0],[0,1,0,0],[0,0,1,Infinity],[0,0,0,1]]}]}',
        "singular.json": json.dumps(
            {"cameras": [{"world_to_camera": [[0] * 4, [0] * 4, [0] * 4, [0, 0, 0, 1]]}]}
        ),
        "degenerate.json": json.dumps(
            {"cameras": [{"camera_to_world": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]}]}
        ),
        "notjson.json": "{cameras: [",
        "empty.json": json.dumps({"cameras": []}),
        "list.json": "[1, 2, 3]",
    }
    for name, text in paths.items():
        (d / name).write_text(text)
        files[name] = d / name
    files["missing.json"] = d / "missing.json"
    # Depth files.
    np.save(d / "nan.npy", np.full((40, 64), np.nan, np.float32))
    with (d / "pickle.npy").open("wb") as f:  # an object array: np.load(allow_pickle=True) would run code
        np.save(f, np.array([_Marker(d / "PICKLE_RAN")], dtype=object), allow_pickle=True)
    files.update({"nan.npy": d / "nan.npy", "pickle.npy": d / "pickle.npy", "marker": d / "PICKLE_RAN"})
    scenes = d / "scenes"
    scenes.mkdir()
    _scene_files(scenes, files)
    _run_dirs(d / "runs", files)
    return files


@dataclass
class Matrix:
    results: dict[str, CliResult]  # case name -> what the CLI did
    files: dict[str, Path]  # the inputs
    out: Path  # out / CASE_NAME: each case's output folder


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> Matrix:
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("inputs")
    files = build_inputs(d / "in")
    outs = {c.name: d / "out" / c.name for c in CASES}
    results = run_cli_many([c.args(files, outs[c.name]) for c in CASES], d / "cli")
    return Matrix(dict(zip([c.name for c in CASES], results, strict=True)), files, d / "out")


# --- the matrix ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_input_matrix(matrix, case: Case):
    r = matrix.results[case.name]
    assert "Traceback" not in r.stderr, r.stderr
    if case.expect == OK:
        assert r.code == 0, r.stderr
        assert r.stderr_lines == [], r.stderr  # -q: nothing on stderr at all
        if r.args[0] == "generate" and "--resume" not in r.args:
            from splat.formats.io import load_scene

            scene = matrix.out / case.name / "scene.ply"
            assert len(load_scene(scene)) > 100
    else:
        assert r.code == 2, (r.code, r.stderr)
        assert len(r.stderr_lines) == 1, r.stderr
        line = r.stderr_lines[0]
        assert line.startswith("error: ") and case.expect in line, line
        assert not (matrix.out / case.name / "manifest.json").exists(), "a refused input must not start a run"
    assert not matrix.files["marker"].exists()


# --- details a user would notice ----------------------------------------------------------------------


def test_exif_orientation_is_applied(matrix):
    """A portrait photo stored landscape + EXIF orientation 6 becomes a portrait scene, the right way up."""
    stored = np.asarray(Image.open(matrix.out / "exif-rotated" / "input.png"), dtype=np.float32)
    h, w = stored.shape[:2]
    assert h > w, f"input.png is {w}x{h}, not portrait"
    pixels = Image.fromarray(synthetic_photo(96, 64))
    right = np.asarray(pixels.transpose(Image.Transpose.ROTATE_270).resize((w, h)), dtype=np.float32)
    wrong = np.asarray(pixels.transpose(Image.Transpose.ROTATE_90).resize((w, h)), dtype=np.float32)
    err_right, err_wrong = np.abs(stored - right).mean(), np.abs(stored - wrong).mean()
    assert err_right < 12 and err_right < err_wrong / 2, (err_right, err_wrong)


def test_colour_modes_keep_the_picture(matrix):
    """16-bit, CMYK, palette, WebP and greyscale inputs build from the same picture as the RGB JPEG."""
    reference = np.asarray(Image.open(matrix.out / "non-utf8-path" / "input.png"), dtype=np.float32)
    grey_ref = reference @ np.array([0.299, 0.587, 0.114], np.float32)
    for name, grey in [
        ("cmyk-jpeg", False),
        ("webp", False),
        ("palette", False),
        ("16bit-png", True),
        ("greyscale", True),
    ]:
        img = np.asarray(Image.open(matrix.out / name / "input.png"), dtype=np.float32)
        assert img.shape == reference.shape, name
        if grey:
            img, ref = img.mean(-1), (grey_ref if name == "greyscale" else reference[..., 1])
            # 16-bit: the green channel was stored, stretched to the file's maximum.
            if name == "16bit-png":
                img = img / max(img.max(), 1) * ref.max()
        else:
            ref = reference
        assert np.abs(img - ref).mean() < 12, name


def test_rgba_transparency_becomes_white(matrix):
    rgba = np.asarray(Image.open(matrix.out / "rgba-png" / "input.png"), dtype=np.float32)
    rgb = np.asarray(Image.open(matrix.out / "non-utf8-path" / "input.png"), dtype=np.float32)
    expected = 0.5 * rgb + 0.5 * 255  # alpha 128 over white
    assert np.abs(rgba - expected).mean() < 8


def test_huge_headers_are_refused_before_allocating(matrix):
    """A 20000x20000 header (1.2 GB of pixels) is refused from its header: the process grows < 32 MiB."""
    for name in ("20000x20000-png", "20000x20000-jpeg", "lying-png"):
        assert matrix.results[name].peak_rss_mib < 32, (name, matrix.results[name].peak_rss_mib)
    assert matrix.files["huge.png"].stat().st_size < 300


def _peak_mib(code: str) -> float:
    """Peak resident memory (MiB) of a fresh Python process running `code` (its VmHWM: ru_maxrss would
    include the pytest process it was forked from)."""
    report = "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')))"
    proc = subprocess.run(
        [sys.executable, "-c", f"{code}\n{report}"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split()[-1]) / 1024.0


def test_big_jpeg_is_decoded_at_reduced_scale(matrix):
    """load_photo of a 24-megapixel JPEG (72 MB of pixels) costs a few MiB above the imports: it is decoded
    at 1/8 scale. The same file decoded at full size, measured the same way, costs over 60 MiB more."""
    big = str(matrix.files["big.jpg"])
    imports = "import engine.images; from PIL import Image; import numpy"
    base = _peak_mib(imports)
    drafted = _peak_mib(f"{imports}; engine.images.load_photo({big!r}, 64)")
    full = _peak_mib(f"{imports}; Image.open({big!r}).load()")
    assert drafted - base < 16 and full - base > 60, (base, drafted, full)


def test_pickled_depth_file_never_runs_code(matrix):
    assert matrix.results["depth-pickle"].code == 2
    assert not matrix.files["marker"].exists()


def test_non_utf8_path_in_a_cold_process(tmp_path):
    """The same bytes path through a plain `python -c` (argv decoded by CPython, not by the harness)."""
    name = NON_UTF8_NAME
    photo_bytes = bytes(tmp_path) + b"/" + name
    with open(photo_bytes, "wb") as f:
        f.write((save_photo(tmp_path / "p.jpg", 80, 48)).read_bytes())
    out = bytes(tmp_path) + b"/out-\xff/scene.ply"
    proc = run_cli([b"generate", photo_bytes, *[a.encode() for a in TINY], b"-o", out])
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    from splat.formats.io import load_scene

    assert len(load_scene(out.decode("utf-8", "surrogateescape"))) > 100
    with open(bytes(tmp_path) + b"/out-\xff/manifest.json", "rb") as f:
        manifest = json.loads(f.read())
    assert manifest["input"].encode("utf-8", "surrogateescape") == photo_bytes
    missing = run_cli([b"info", bytes(tmp_path) + b"/nope-\xff.ply"])
    lines = missing.stderr.decode(errors="replace").strip().splitlines()
    assert missing.returncode == 2 and len(lines) == 1 and "no such file" in lines[0]


def markdown_table(results: dict[str, CliResult]) -> str:
    rows = ["| Input | Outcome | Message |", "|---|---|---|"]
    for case in CASES:
        r = results[case.name]
        if r.code == 0:
            outcome, message = "works (exit 0)", ""
        else:
            outcome = f"exit {r.code}"
            message = r.stderr_lines[0] if r.stderr_lines else ""
            message = message.replace("|", "\\|")
        rows.append(f"| {case.what} | {outcome} | {message[:140]} |")
    return "\n".join(rows)


if __name__ == "__main__":  # regenerate the README table
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = build_inputs(root / "in")
        res = run_cli_many([c.args(files, root / "out" / c.name) for c in CASES], root / "cli")
        table = markdown_table(dict(zip([c.name for c in CASES], res, strict=True)))
        print(table.replace(str(root), "…"))
