"""Fuzz the scene readers: a damaged file either loads as finite Gaussians or raises SceneFileError.

Bounded by default (a few seconds); STITCH_FUZZ_LONG=1 raises the example count for a longer soak.
"""

from __future__ import annotations

import gzip
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import plyfile
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splat.formats.io import SceneFileError, load_scene, save_scene, save_spz
from splat.gaussians import Gaussians

try:
    import zstandard
except ImportError:  # optional: only needed for .spz version 4
    zstandard = None

torch.set_num_threads(1)

LONG = os.environ.get("STITCH_FUZZ_LONG") == "1"
FUZZ = settings(
    max_examples=4000 if LONG else 200,
    deadline=None,
    database=None,
    derandomize=not LONG,  # reproducible in CI; random exploration in long mode
    suppress_health_check=[HealthCheck.too_slow],
)


def _gaussians(n: int = 6, degree: int = 1) -> Gaussians:
    g = torch.Generator().manual_seed(1)
    k = (degree + 1) ** 2 - 1
    return Gaussians(
        {
            "means": torch.randn(n, 3, generator=g),
            "scales": torch.randn(n, 3, generator=g) - 3.0,
            "quats": torch.randn(n, 4, generator=g),
            "opacities": torch.randn(n, generator=g),
            "sh0": torch.randn(n, 1, 3, generator=g) * 0.5,
            "shN": torch.randn(n, k, 3, generator=g) * 0.2,
        }
    )


def _valid_files() -> dict[str, bytes]:
    out = {}
    with tempfile.TemporaryDirectory() as d:
        g = _gaussians()
        for suffix in (".ply", ".splat", ".spz"):
            path = Path(d) / f"v{suffix}"
            save_scene(g, path)
            out[suffix] = path.read_bytes()
        data = plyfile.PlyData.read(str(Path(d) / "v.ply"), mmap=False)
        ascii_path = Path(d) / "a.ply"
        plyfile.PlyData(data.elements, text=True).write(str(ascii_path))
        out["ascii.ply"] = ascii_path.read_bytes()
        save_spz(g, Path(d) / "v3.spz", version=3)
        out["v3.spz"] = (Path(d) / "v3.spz").read_bytes()
        if zstandard is not None:
            out["v4.spz"] = _as_v4(gzip.decompress(out["v3.spz"]))
    return out


def _as_v4(payload: bytes) -> bytes:
    """The version-4 container (plaintext header, table of contents, zstd streams) for a v3 payload."""
    magic, _, n, degree, bits, flags, _ = struct.unpack("<IIIBBBB", payload[:16])
    sizes = [9 * n, n, 3 * n, 3 * n, 4 * n, 3 * ((degree + 1) ** 2 - 1) * n]
    blocks, off = [], 16
    for size in sizes:
        blocks.append(payload[off : off + size])
        off += size
    packed = [zstandard.ZstdCompressor(write_checksum=True).compress(b) for b in blocks]
    header = struct.pack("<IIIBBBBI12x", magic, 4, n, degree, bits, flags, len(blocks), 32)
    toc = b"".join(struct.pack("<QQ", len(p), len(b)) for p, b in zip(packed, blocks, strict=True))
    return header + toc + b"".join(packed)


VALID = _valid_files()
KINDS = sorted(VALID)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _load_or_scene_error(path: Path) -> None:
    try:
        g = load_scene(path)
    except SceneFileError as e:
        assert str(path) in str(e)
        return
    for key, value in g.params.items():
        assert torch.isfinite(value).all(), key


def _write(fuzz_dir: Path, kind: str, data: bytes) -> Path:
    suffix = "." + kind.rsplit(".", 1)[-1]
    path = fuzz_dir / f"case{suffix}"
    path.write_bytes(data)
    return path


@FUZZ
@given(kind=st.sampled_from(KINDS), cut=st.floats(0.0, 1.0))
def test_truncated_files(fuzz_dir, kind, cut):
    data = VALID[kind]
    _load_or_scene_error(_write(fuzz_dir, kind, data[: int(len(data) * cut)]))


@FUZZ
@given(
    kind=st.sampled_from(KINDS),
    flips=st.lists(
        st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 7)), min_size=1, max_size=8
    ),
    header_bias=st.booleans(),
)
def test_bit_flips(fuzz_dir, kind, flips, header_bias):
    data = bytearray(VALID[kind])
    span = min(len(data), 600) if header_bias else len(data)  # half the cases aim at the header
    for where, bit in flips:
        data[int(where * span)] ^= 1 << bit
    _load_or_scene_error(_write(fuzz_dir, kind, bytes(data)))


@FUZZ
@given(
    kind=st.sampled_from(["v.ply", "ascii.ply"]),
    count=st.one_of(
        st.integers(0, 100), st.integers(0, 2**64), st.sampled_from([-1, 10**12, 2**31, 2**32 - 1])
    ),
)
def test_lying_vertex_counts(fuzz_dir, kind, count):
    data = VALID[".ply" if kind == "v.ply" else kind]
    lied = data.replace(b"element vertex 6\n", f"element vertex {count}\n".encode(), 1)
    assert lied != data or count == 6
    _load_or_scene_error(_write(fuzz_dir, ".ply", lied))


@FUZZ
@given(count=st.integers(0, 2**32 - 1), degree=st.integers(0, 255), bits=st.integers(0, 255))
def test_lying_spz_headers(fuzz_dir, count, degree, bits):
    payload = gzip.decompress(VALID[".spz"])
    header = struct.pack("<IIIBBBB", 0x5053474E, 2, count, degree, bits, 0, 0)
    _load_or_scene_error(_write(fuzz_dir, ".spz", gzip.compress(header + payload[16:])))


@FUZZ
@given(junk=st.binary(min_size=0, max_size=300), kind=st.sampled_from(KINDS))
def test_random_bytes_and_random_header_lines(fuzz_dir, junk, kind):
    _load_or_scene_error(_write(fuzz_dir, kind, junk))
    if kind.endswith(".ply"):  # a random line spliced into a valid header
        data = VALID[".ply"]
        at = data.index(b"end_header")
        _load_or_scene_error(_write(fuzz_dir, kind, data[:at] + junk + b"\n" + data[at:]))


def test_fuzz_inputs_are_valid_to_start_with(fuzz_dir):
    for kind, data in VALID.items():
        g = load_scene(_write(fuzz_dir, kind, data))
        assert len(g) == 6 and np.isfinite(g.params["means"].detach().numpy()).all()
