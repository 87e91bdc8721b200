"""Scene files: exact .ply round trips, interop with plyfile, .splat/.spz exports, and clear errors."""

from __future__ import annotations

import gzip
import os
import struct
import time
import tracemalloc
from pathlib import Path

import numpy as np
import plyfile
import pytest
import torch

from splat.errors import StitchError
from splat.formats.io import (
    SceneFileError,
    load_ply,
    load_scene,
    load_splat,
    load_spz,
    save_ply,
    save_scene,
    save_splat,
    save_spz,
    scene_info,
)
from splat.formats.ply import ply_property_names
from splat.formats.spz import SH_FLIP_RDF_RUB
from splat.gaussians import SH_C0, Gaussians
from splat.sh import sh_bases

torch.set_num_threads(1)


def make_gaussians(n: int = 40, degree: int = 3, seed: int = 0) -> Gaussians:
    """Random Gaussians whose values sit inside every format's representable range."""
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2 - 1
    return Gaussians(
        {
            "means": (torch.rand(n, 3, generator=g) - 0.5) * 20.0,
            "scales": torch.rand(n, 3, generator=g) * 8.0 - 8.0,
            "quats": torch.randn(n, 4, generator=g),
            "opacities": torch.randn(n, generator=g) * 2.0,
            "sh0": torch.rand(n, 1, 3, generator=g) * 3.0 - 1.5,
            "shN": torch.rand(n, k, 3, generator=g) * 1.8 - 0.9,
        }
    )


def unit_quats(q: torch.Tensor) -> torch.Tensor:
    q = torch.nn.functional.normalize(q, dim=-1)
    return q * torch.where(q[:, :1] < 0, -1.0, 1.0)  # q and -q are the same rotation


def assert_close(actual, expected, rtol: float = 1e-7, atol: float = 0.0) -> None:
    """numpy's allclose check on tensors (torch.testing's first call imports torch.distributed, ~2 s)."""

    def arr(x):
        return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

    np.testing.assert_allclose(arr(actual), arr(expected), rtol=rtol, atol=atol)


def write_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


def ply_bytes(
    names_types: list[tuple[str, str]], count: int, body: bytes, fmt="binary_little_endian"
) -> bytes:
    lines = ["ply", f"format {fmt} 1.0", f"element vertex {count}"]
    lines += [f"property {t} {n}" for n, t in names_types]
    return ("\n".join([*lines, "end_header"]) + "\n").encode() + body


INRIA_DEG0 = [(n, "float") for n in ply_property_names(0)]


def expect_error(path, *words: str, loader=load_scene) -> str:
    with pytest.raises(SceneFileError) as info:
        loader(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    assert "\n" not in msg
    return msg


# --- .ply ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_ply_round_trip_is_exact(tmp_path, degree):
    g = make_gaussians(degree=degree, seed=degree)
    path = tmp_path / "scene.ply"
    save_ply(g, path)
    back = load_ply(path)
    assert back.sh_degree == degree
    for key, value in g.params.items():
        assert torch.equal(back.params[key], value), key


def test_ply_written_here_reads_in_plyfile_with_inria_layout(tmp_path):
    g = make_gaussians(n=7, degree=2)
    path = tmp_path / "scene.ply"
    save_ply(g, path)
    data = plyfile.PlyData.read(str(path))
    assert data.text is False and data.byte_order == "<"
    vertex = data["vertex"]
    k = 8
    expected = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    expected += [f"f_rest_{i}" for i in range(3 * k)]
    expected += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert [p.name for p in vertex.properties] == expected
    assert all(vertex.data.dtype[name] == np.dtype("<f4") for name in expected)
    assert vertex.count == 7
    shn = g.params["shN"].detach().numpy()
    for c in range(3):  # channel-major: all red coefficients, then green, then blue
        for j in range(k):
            np.testing.assert_array_equal(vertex[f"f_rest_{c * k + j}"], shn[:, j, c])
    rgb = 0.5 + 0.2820948 * np.stack([vertex[f"f_dc_{c}"] for c in range(3)], axis=1)
    np.testing.assert_allclose(rgb.clip(0, 1), g.rgb().detach().numpy(), atol=1e-6)
    np.testing.assert_array_equal(vertex["rot_0"], g.params["quats"][:, 0].detach().numpy())  # w first
    np.testing.assert_array_equal(vertex["nx"], np.zeros(7, np.float32))


def test_ply_with_extra_reordered_double_properties_loads(tmp_path):
    g = make_gaussians(n=6, degree=1, seed=3)
    t = {k: v.detach().numpy().astype(np.float64) for k, v in g.params.items()}
    fields = {"red": np.arange(6, dtype=np.uint8), "confidence": np.linspace(0, 1, 6)}
    for i, axis in enumerate("xyz"):
        fields[axis] = t["means"][:, i]
        fields[f"scale_{i}"] = t["scales"][:, i]
        fields[f"f_dc_{i}"] = t["sh0"][:, 0, i]
    for i in range(4):
        fields[f"rot_{i}"] = t["quats"][:, i]
    fields["opacity"] = t["opacities"]
    for c in range(3):
        for j in range(3):
            fields[f"f_rest_{c * 3 + j}"] = t["shN"][:, j, c]
    order = sorted(fields, reverse=True)  # scrambled relative to the INRIA order
    arr = np.empty(6, dtype=[(n, fields[n].dtype) for n in order])
    for n in order:
        arr[n] = fields[n]
    path = tmp_path / "other_tool.ply"
    plyfile.PlyData([plyfile.PlyElement.describe(arr, "vertex")]).write(str(path))
    back = load_ply(path)
    assert back.sh_degree == 1
    for key, value in g.params.items():
        assert_close(back.params[key], value, rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", ["ascii", "big_endian"])
def test_ply_ascii_and_big_endian_load(tmp_path, variant):
    g = make_gaussians(n=5, degree=1, seed=4)
    src = tmp_path / "src.ply"
    save_ply(g, src)
    data = plyfile.PlyData.read(str(src))
    out = tmp_path / f"{variant}.ply"
    if variant == "ascii":
        plyfile.PlyData(data.elements, text=True).write(str(out))
        atol = 1e-5  # ascii floats are printed with limited digits
    else:
        plyfile.PlyData(data.elements, byte_order=">").write(str(out))
        atol = 0
    back = load_ply(out)
    for key, value in g.params.items():
        assert_close(back.params[key], value, rtol=1e-5, atol=atol)


def test_ply_with_face_element_after_vertices_loads(tmp_path):
    g = make_gaussians(n=3, degree=0)
    save_ply(g, tmp_path / "a.ply")
    data = plyfile.PlyData.read(str(tmp_path / "a.ply"))
    faces = np.array([([0, 1, 2],)], dtype=[("vertex_indices", "O")])
    plyfile.PlyData([data["vertex"], plyfile.PlyElement.describe(faces, "face")]).write(
        str(tmp_path / "b.ply")
    )
    assert torch.equal(load_ply(tmp_path / "b.ply").params["means"], g.params["means"])


@pytest.mark.parametrize("suffix", [".ply", ".splat", ".spz"])
def test_empty_scene_round_trips(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    save_scene(Gaussians.empty(sh_degree=0), path)
    assert len(load_scene(path)) == 0
    info = scene_info(path)
    assert info["count"] == 0 and info["bounds"] is None


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "scene.ply"
    save_ply(make_gaussians(n=4, degree=0), path)
    good = path.read_bytes()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("splat.formats.scene_arrays.os.fsync", broken_fsync)
    with pytest.raises(SceneFileError, match="No space left"):
        save_ply(make_gaussians(n=500, degree=3), path)
    monkeypatch.undo()
    assert path.read_bytes() == good  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.ply"]  # temp file removed
    assert (path.stat().st_mode & 0o777) == 0o644 or os.name != "posix"


def test_save_refuses_nonfinite_gaussians_and_keeps_old_file(tmp_path):
    path = tmp_path / "scene.ply"
    save_ply(make_gaussians(n=4, degree=0), path)
    good = path.read_bytes()
    bad = make_gaussians(n=4, degree=0)
    with torch.no_grad():
        bad.params["opacities"][2] = float("nan")
    for saver, name in [(save_ply, "scene.ply"), (save_splat, "s.splat"), (save_spz, "s.spz")]:
        with pytest.raises(SceneFileError, match="NaN/Inf in 'opacities'"):
            saver(bad, tmp_path / name)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.ply"]


# --- malformed .ply -------------------------------------------------------------------------------------


@pytest.fixture
def valid_ply(tmp_path) -> bytes:
    path = tmp_path / "valid.ply"
    save_ply(make_gaussians(n=10, degree=1), path)
    return path.read_bytes()


def test_scene_file_error_is_a_stitch_error_and_value_error():
    assert issubclass(SceneFileError, StitchError) and issubclass(SceneFileError, ValueError)


def test_truncated_ply(tmp_path, valid_ply):
    path = write_bytes(tmp_path / "t.ply", valid_ply[:-7])
    expect_error(path, "truncated")


def test_truncated_header(tmp_path, valid_ply):
    path = write_bytes(tmp_path / "t.ply", valid_ply[:40])
    expect_error(path, "truncated", "end_header")


def test_wrong_property_type(tmp_path):
    props = [("x", "uchar")] + [(n, "float") for n in ply_property_names(0) if n != "x"]
    row = b"\x01" + b"\x00" * 4 * (len(props) - 1)
    path = write_bytes(tmp_path / "u.ply", ply_bytes(props, 1, row))
    expect_error(path, "'x'", "uchar", "float")


def test_missing_required_property(tmp_path):
    props = [(n, "float") for n in ply_property_names(0) if n != "rot_3"]
    path = write_bytes(tmp_path / "m.ply", ply_bytes(props, 2, b"\x00" * 4 * len(props) * 2))
    expect_error(path, "rot_3", "not a 3DGS PLY")


def test_plain_point_cloud_ply_is_not_a_scene(tmp_path):
    props = [("x", "float"), ("y", "float"), ("z", "float"), ("red", "uchar")]
    path = write_bytes(tmp_path / "pc.ply", ply_bytes(props, 1, b"\x00" * 13))
    expect_error(path, "lacks")


def test_absurd_vertex_count_fails_fast_without_allocating(tmp_path):
    header = ply_bytes(INRIA_DEG0, 10**12, b"")
    path = write_bytes(tmp_path / "huge.ply", header + b"\x00" * (1024 - len(header)))
    assert path.stat().st_size == 1024
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        expect_error(path, "1000000000000", "truncated")
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 50 * 2**20
    assert time.perf_counter() - t0 < 5.0


def test_absurd_count_in_ascii_ply(tmp_path):
    path = write_bytes(tmp_path / "a.ply", ply_bytes(INRIA_DEG0, 10**12, b"0 " * 30, fmt="ascii"))
    expect_error(path, "ascii values")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_values_are_rejected(tmp_path, value):
    g = make_gaussians(n=5, degree=0)
    path = tmp_path / "nan.ply"
    save_ply(g, path)
    data = plyfile.PlyData.read(str(path), mmap=False)  # (a mmap would break when we overwrite the file)
    data["vertex"]["scale_1"][3] = value
    data.write(str(path))
    msg = expect_error(path, "NaN/Inf", "'scales'", "index 3")
    assert "1 of 5" in msg


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", ("not a PLY",)),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, ("not a PLY", "PNG")),
        (b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\n", ("end_header",)),
        (b"ply\nformat xml 1.0\nelement vertex 0\nend_header\n", ("format",)),
        (b"ply\nelement vertex 0\nend_header\n", ("no format line",)),
        (b"ply\nformat ascii 1.0\nelement vertex -3\nend_header\n", ("malformed element",)),
        (b"ply\nformat ascii 1.0\nelement vertex 1e3\nend_header\n", ("malformed element",)),
        (
            b"ply\nformat ascii 1.0\nelement vertex 0\nproperty float16 x\nend_header\n",
            ("malformed property",),
        ),
        (b"ply\nformat ascii 1.0\nproperty float x\nend_header\n", ("before any element",)),
        (b"ply\nformat ascii 1.0\nelement face 0\nend_header\n", ("no 'vertex' element",)),
        (b"ply\nformat ascii 1.0\nbogus\nend_header\n", ("unknown keyword",)),
        (b"ply\nformat ascii 1.0\ncomment caf\xc3\xa9\nend_header\n", ("non-ASCII",)),
        (
            b"ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float x\nend_header\n",
            ("declared twice",),
        ),
        (
            b"ply\nformat binary_little_endian 1.0\nelement vertex 0\nproperty list uchar float x\n"
            b"end_header\n",
            ("is a list",),
        ),
    ],
)
def test_malformed_headers(tmp_path, content, words):
    path = write_bytes(tmp_path / "bad.ply", content)
    expect_error(path, *words)


def test_huge_header_line_is_bounded(tmp_path):
    path = write_bytes(tmp_path / "line.ply", b"ply\ncomment " + b"a" * (4 * 2**20) + b"\nend_header\n")
    expect_error(path, "end_header", "65536")


def test_millions_of_properties_are_bounded(tmp_path):
    many = b"property float p\n" * 1_000_000  # 17 MB of header; only the first 64 KiB is ever read
    path = write_bytes(
        tmp_path / "props.ply", b"ply\nformat ascii 1.0\nelement vertex 1\n" + many + b"end_header\n"
    )
    expect_error(path, "65536")
    props = "".join(f"property float p{i}\n" for i in range(3000)).encode()
    path = write_bytes(
        tmp_path / "props2.ply", b"ply\nformat ascii 1.0\nelement vertex 1\n" + props + b"end_header\n"
    )
    expect_error(path, "more than 2048 properties")


def test_sh_rest_count_must_match_a_degree(tmp_path):
    props = INRIA_DEG0 + [(f"f_rest_{i}", "float") for i in range(10)]
    path = write_bytes(tmp_path / "rest.ply", ply_bytes(props, 1, b"\x00" * 4 * len(props)))
    expect_error(path, "10 f_rest_", "SH degree")
    props = INRIA_DEG0 + [(f"f_rest_{i}", "float") for i in [0, 1, 2, 3, 4, 5, 6, 7, 9]]
    path = write_bytes(tmp_path / "gap.ply", ply_bytes(props, 1, b"\x00" * 4 * len(props)))
    expect_error(path, "numbered")


def test_missing_file_and_unknown_suffix(tmp_path):
    expect_error(tmp_path / "nope.ply", "no such file")
    expect_error(tmp_path, "unknown scene format")
    (tmp_path / "x.obj").write_bytes(b"v 0 0 0\n")
    expect_error(tmp_path / "x.obj", "unknown scene format", ".obj")
    with pytest.raises(SceneFileError, match="unknown scene format"):
        save_scene(make_gaussians(n=1), tmp_path / "x.glb")


# --- .splat ---------------------------------------------------------------------------------------------


def test_splat_export_layout_and_round_trip(tmp_path):
    g = make_gaussians(n=64, degree=3, seed=5)
    path = tmp_path / "scene.splat"
    save_splat(g, path)
    assert path.stat().st_size == 32 * 64
    t = {k: v.detach().numpy() for k, v in g.params.items()}
    key = np.exp(t["scales"].astype(np.float64).sum(1)) / (1 + np.exp(-t["opacities"].astype(np.float64)))
    order = np.argsort(-key, kind="stable")
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8).reshape(64, 32)
    pos = raw[:, :12].copy().view("<f4")
    np.testing.assert_array_equal(pos, t["means"][order])  # positions exact
    np.testing.assert_allclose(raw[:, 12:24].copy().view("<f4"), np.exp(t["scales"][order]), rtol=1e-6)

    back = load_splat(path)
    b = {k: v.detach().numpy() for k, v in back.params.items()}
    assert back.sh_degree == 0
    np.testing.assert_array_equal(b["means"], t["means"][order])
    np.testing.assert_allclose(b["scales"], t["scales"][order], atol=1e-5)
    rgb = np.clip(0.5 + SH_C0 * t["sh0"][order, 0], 0, 1)
    np.testing.assert_allclose(0.5 + SH_C0 * b["sh0"][:, 0], rgb, atol=1 / 255 + 1e-6)
    alpha = 1 / (1 + np.exp(-t["opacities"][order]))
    np.testing.assert_allclose(1 / (1 + np.exp(-b["opacities"])), alpha, atol=1 / 255 + 1e-6)
    dots = (unit_quats(back.params["quats"]) * unit_quats(g.params["quats"][order])).sum(1).abs()
    assert dots.min() > 0.999
    back_key = np.exp(b["scales"].astype(np.float64).sum(1)) / (
        1 + np.exp(-b["opacities"].astype(np.float64))
    )
    assert (np.diff(back_key) <= 1e-3 * back_key[1:]).all()  # big, opaque splats first


def test_malformed_splat(tmp_path):
    expect_error(write_bytes(tmp_path / "a.splat", b"\x00" * 33), "multiple of 32")
    row = struct.pack("<3f3f4B4B", float("nan"), 0, 0, 1, 1, 1, 0, 0, 0, 255, 255, 128, 128, 128)
    expect_error(write_bytes(tmp_path / "b.splat", row), "NaN/Inf")
    row = struct.pack("<3f3f4B4B", 0, 0, 0, -1, 1, 1, 0, 0, 0, 255, 255, 128, 128, 128)
    expect_error(write_bytes(tmp_path / "c.splat", row), "negative scales")


# --- .spz -----------------------------------------------------------------------------------------------


def spz_payload(path) -> bytes:
    return gzip.decompress(path.read_bytes())


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_spz_round_trip_within_quantisation(tmp_path, version, degree):
    g = make_gaussians(n=50, degree=degree, seed=10 + degree)
    path = tmp_path / "scene.spz"
    save_spz(g, path, version=version)
    magic, ver, n, deg, bits, flags, reserved = struct.unpack("<IIIBBBB", spz_payload(path)[:16])
    assert (magic, ver, n, deg, bits, flags, reserved) == (0x5053474E, version, 50, degree, 12, 0, 0)
    back = load_spz(path)
    assert back.sh_degree == degree and len(back) == 50
    t, b = g.params, back.params
    assert_close(b["means"], t["means"], rtol=0, atol=0.5 / 4096 + 1e-5)
    assert_close(b["scales"], t["scales"], rtol=0, atol=0.5 / 16 + 1e-5)
    assert_close(torch.sigmoid(b["opacities"]), torch.sigmoid(t["opacities"]), rtol=0, atol=0.51 / 255)
    assert_close(b["sh0"], t["sh0"], rtol=0, atol=0.51 / (0.15 * 255))
    if degree:
        assert_close(b["shN"][:, :3], t["shN"][:, :3], rtol=0, atol=4.5 / 128)  # 5-bit degree 1
        assert_close(b["shN"], t["shN"], rtol=0, atol=8.5 / 128)  # 4-bit degree 2, 3
    dots = (unit_quats(b["quats"]) * unit_quats(t["quats"])).sum(1).abs()
    # v2 keeps x, y, z in 8 bits (worst case ~7 degrees when w is near 0); v3 is within ~0.25 degrees.
    assert dots.min() > (0.99999 if version == 3 else 0.998)


def _decode_first_point(payload: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Position, v2 rotation xyz and degree-1 SH (red) of the only point in a v2 payload, decoded by hand."""
    p = np.frombuffer(payload[16:25], dtype=np.uint8).reshape(3, 3).astype(np.int64)
    fixed = p[:, 0] | (p[:, 1] << 8) | (p[:, 2] << 16)
    fixed = (fixed ^ 0x800000) - 0x800000
    rot = np.frombuffer(payload[32:35], dtype=np.uint8) / 127.5 - 1  # after pos 9, alpha 1, rgb 3, scale 3
    sh = (np.frombuffer(payload[-9:], dtype=np.uint8).reshape(3, 3) - 128.0) / 128.0
    return fixed / 4096.0, rot, sh[:, 0]


@pytest.mark.parametrize("axes", ["ply", "rub"])
def test_spz_axes(tmp_path, axes):
    """Default: the .ply's frame, byte for byte (as SuperSplat/splat-transform expect); "rub" flips y, z."""
    g = make_gaussians(n=1, degree=1)
    half = 0.3  # a rotation of 0.6 rad about y
    with torch.no_grad():
        g.params["means"][:] = torch.tensor([[1.0, 2.0, 3.0]])
        g.params["quats"][:] = torch.tensor([[np.cos(half), 0.0, np.sin(half), 0.0]])
        g.params["shN"][:] = torch.tensor([[[0.25] * 3, [0.5] * 3, [0.75] * 3]])
    path = tmp_path / "axes.spz"
    save_spz(g, path, axes=axes)
    pos, rot, sh1 = _decode_first_point(spz_payload(path))
    sign = np.array([1.0, -1.0, -1.0]) if axes == "rub" else np.ones(3)
    np.testing.assert_allclose(pos, [1.0, 2.0, 3.0] * sign)
    np.testing.assert_allclose(rot, [0.0, np.sin(half) * sign[1], 0.0], atol=1 / 127)
    sh_sign = np.array([-1.0, -1.0, 1.0]) if axes == "rub" else np.ones(3)  # degree-1 basis is -y, z, -x
    np.testing.assert_allclose(sh1, [0.25, 0.5, 0.75] * sh_sign, atol=4.5 / 128)
    back = load_spz(path, axes=axes)
    assert_close(back.params["means"], g.params["means"], rtol=0, atol=1e-3)
    assert_close(unit_quats(back.params["quats"]), unit_quats(g.params["quats"]), rtol=0, atol=0.01)
    assert_close(back.params["shN"], g.params["shN"], rtol=0, atol=4.5 / 128)
    if axes == "rub":  # read without the flip, the scene is upside down: y and z negated
        raw = load_spz(path)
        assert_close(raw.params["means"], g.params["means"] * torch.tensor([1.0, -1.0, -1.0]))


def test_spz_sh_sign_table_is_the_yz_flip():
    """Flipping the coefficients and the direction together leaves every SH basis product unchanged."""
    dirs = torch.nn.functional.normalize(torch.randn(200, 3, dtype=torch.float64), dim=-1)
    flip = torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)
    basis = sh_bases(3, dirs)[:, 1:]
    flipped = sh_bases(3, dirs * flip)[:, 1:]
    assert_close(flipped * torch.from_numpy(SH_FLIP_RDF_RUB), basis)


def test_malformed_spz(tmp_path):
    good = tmp_path / "good.spz"
    save_spz(make_gaussians(n=20, degree=1), good)
    raw = good.read_bytes()
    payload = gzip.decompress(raw)
    expect_error(write_bytes(tmp_path / "a.spz", b"hello world"), "not a .spz", "gzip")
    expect_error(write_bytes(tmp_path / "b.spz", raw[: len(raw) // 2]), "truncated")
    expect_error(write_bytes(tmp_path / "c.spz", raw[:12]), "truncated")
    expect_error(write_bytes(tmp_path / "d.spz", gzip.compress(b"XXXX" + payload[4:])), "magic")
    expect_error(
        write_bytes(tmp_path / "e.spz", gzip.compress(payload[:4] + b"\x07" + payload[5:])), "version 7"
    )
    expect_error(write_bytes(tmp_path / "f.spz", b"NGSP" + b"\x00" * 60), "version 0")
    flagged = payload[:14] + b"\x02" + payload[15:]
    expect_error(write_bytes(tmp_path / "g.spz", gzip.compress(flagged)), "extensions")
    expect_error(write_bytes(tmp_path / "h.spz", gzip.compress(payload[:-5])), "truncated")
    lying = payload[:8] + struct.pack("<I", 0xFFFFFFFF) + payload[12:]
    tracemalloc.start()
    try:
        expect_error(write_bytes(tmp_path / "i.spz", gzip.compress(lying)), "4294967295", "cannot hold")
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 50 * 2**20


DATA = Path(__file__).parent / "data" / "io"


def test_files_from_splat_transform_load(tmp_path):
    """An independent writer's .ply (other property order, no normals) and zstd .spz v4 read back right."""
    source = load_ply(DATA / "source_deg3.ply")
    other = load_ply(DATA / "splat_transform.ply")
    for key, value in source.params.items():
        assert torch.equal(other.params[key], value), key
    pytest.importorskip("zstandard")
    spz = load_spz(DATA / "splat_transform_v4.spz")
    assert spz.sh_degree == 3 and len(spz) == 16
    t, b = source.params, spz.params
    assert_close(b["means"], t["means"], rtol=0, atol=0.5 / 4096 + 1e-5)  # same frame
    assert_close(b["scales"], t["scales"], rtol=0, atol=0.5 / 16 + 1e-5)
    assert_close(b["sh0"], t["sh0"], rtol=0, atol=0.51 / (0.15 * 255))
    assert_close(b["shN"], t["shN"], rtol=0, atol=8.5 / 128)
    assert (unit_quats(b["quats"]) * unit_quats(t["quats"])).sum(1).abs().min() > 0.99999
    assert scene_info(DATA / "splat_transform_v4.spz")["spz_version"] == 4


def make_v4(
    payload: bytes, n_streams: int | None = None, toc: int = 32, sizes_fn=None, lie_toc=None
) -> bytes:
    """Re-wrap a gzip v3 payload as a version-4 container (one zstd stream per attribute block)."""
    zstandard = pytest.importorskip("zstandard")
    magic, _, n, degree, bits, flags, _ = struct.unpack("<IIIBBBB", payload[:16])
    k = (degree + 1) ** 2 - 1
    sizes = [9 * n, n, 3 * n, 3 * n, 4 * n] + ([3 * k * n] if k else [])
    blocks, off = [], 16
    for size in sizes:
        blocks.append(payload[off : off + size])
        off += size
    packed = [zstandard.ZstdCompressor().compress(b) for b in blocks]
    count = len(blocks) if n_streams is None else n_streams
    header = struct.pack("<IIIBBBBI12x", magic, 4, n, degree, bits, flags, count, lie_toc or toc)
    entries = [(len(p), len(b)) for p, b in zip(packed, blocks, strict=True)]
    if sizes_fn is not None:
        entries = sizes_fn(entries)
    table = b"".join(struct.pack("<QQ", *e) for e in entries)
    return header + b"\x00" * (toc - 32) + table + b"".join(packed)


def test_spz_v4_container(tmp_path):
    g = make_gaussians(n=30, degree=2, seed=8)
    v3 = tmp_path / "v3.spz"
    save_spz(g, v3, version=3)
    payload = spz_payload(v3)
    v4 = write_bytes(tmp_path / "v4.spz", make_v4(payload, toc=40))  # 8 bytes of extension zone, skipped
    a, b = load_spz(v3), load_spz(v4)
    for key in a.params:
        assert torch.equal(a.params[key], b.params[key]), key
    good = v4.read_bytes()
    expect_error(write_bytes(tmp_path / "t.spz", good[:-10]), "stream")
    expect_error(write_bytes(tmp_path / "h.spz", good[:20]), "32-byte header")
    expect_error(write_bytes(tmp_path / "n.spz", make_v4(payload, n_streams=4)), "4 data streams")
    expect_error(write_bytes(tmp_path / "o.spz", make_v4(payload, lie_toc=10**9)), "table of contents")
    lie = make_v4(payload, sizes_fn=lambda e: [(e[0][0], e[0][1] + 1), *e[1:]])
    expect_error(write_bytes(tmp_path / "s.spz", lie), "stream 0")
    corrupt = bytearray(good)
    corrupt[40 + 6 * 16] ^= 0xFF  # the first stream's zstd magic number
    expect_error(write_bytes(tmp_path / "c.spz", bytes(corrupt)), "corrupt zstd stream 0")
    huge = payload[:8] + struct.pack("<I", 2**32 - 1) + payload[12:]
    expect_error(write_bytes(tmp_path / "b.spz", make_v4(huge)[:4096]), "cannot hold")


# --- front door -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".ply", ".splat", ".spz", ".PLY"])
def test_save_scene_dispatch_and_scene_info(tmp_path, suffix):
    g = make_gaussians(n=30, degree=2, seed=7)
    path = tmp_path / f"scene{suffix}"
    save_scene(g, path)
    fmt = suffix.lower()[1:]
    info = scene_info(path)
    assert info["format"] == fmt
    assert info["count"] == 30
    assert info["sh_degree"] == (0 if fmt == "splat" else 2)
    assert info["file_size"] == path.stat().st_size
    means = g.params["means"].detach().numpy()
    atol = 1e-3 if fmt == "spz" else 0
    np.testing.assert_allclose(info["bounds"]["min"], means.min(0), atol=atol)
    np.testing.assert_allclose(info["bounds"]["max"], means.max(0), atol=atol)
    assert len(load_scene(path)) == 30
    alpha = torch.sigmoid(g.params["opacities"]).mean().item()
    assert info["mean_opacity"] == pytest.approx(alpha, abs=0.01 if fmt != "ply" else 1e-6)
    if fmt == "spz":
        assert info["spz_version"] == 2
