""".spz files (Niantic's compressed splat format): write versions 2/3 (gzip), read versions 2, 3 and 4.

Layout of versions 2 and 3 after gunzip (all little-endian), per nianticlabs/spz's README and loader:

    header (16 bytes)  u32 magic 0x5053474e ("NGSP"), u32 version, u32 numPoints,
                       u8 shDegree, u8 fractionalBits, u8 flags (0x1 antialiased, 0x2 extensions), u8 reserved
    positions  N x 3 x 24-bit signed fixed point (value * 2^fractionalBits)
    alphas     N x u8     sigmoid(opacity) * 255
    colours    N x 3 u8   sh0 * (0.15 * 255) + 127.5   (0.15, not SH_C0, leaves headroom outside 0..1)
    scales     N x 3 u8   (log scale + 10) * 16
    rotations  v2: N x 3 u8, (x, y, z) of the unit quaternion with w >= 0, * 127.5 + 127.5
               v3/v4: N x u32, index of the largest component (2 bits) + the other three as sign + 9 bits
    sh         N x K x 3 u8 (coefficient-major, colour inner), x * 128 + 128; we quantise degree-1
               coefficients to 5 bits and higher ones to 4 bits, as the reference encoder does

Version 4 (read only; needs the optional `zstandard` package) has a 32-byte plaintext header (byte 15 =
stream count, bytes 16..19 = table-of-contents offset), optional extension records, a table of
(u64 compressed, u64 uncompressed) sizes and one zstd stream per attribute block above.

Axes. The spz README says spz "stores RUB" (x right, y up, z back: OpenGL / three.js), but its reference
library only converts when the caller names a source frame: its own ply_to_spz tool and PlayCanvas
splat-transform (SuperSplat's converter) write and read the bytes raw, in the frame of the source .ply.
We follow that practice by default (`axes="ply"`): positions, rotations and SH are stored in the
scene's own frame (stitch: RDF, OpenCV axes), so an exported .spz shows exactly like our .ply in those
viewers. `axes="rub"` flips y and z (a 180-degree turn about x: positions and the quaternion's y, z
change sign, as do the SH coefficients odd in y or z) for consumers that expect the README's RUB frame.

We write version 2 by default (readable by every spz loader); version 3 stores rotations more precisely.
Legacy gzip files with extensions (flag 0x2) are rejected; version-4 extension records are skipped.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from typing import IO

import numpy as np

from splat.formats.scene_arrays import (
    Device,
    PathLike,
    SceneArrays,
    atomic_write,
    check_point_count,
    check_readable,
    fail,
    logit,
    normalised_quats,
    sigmoid,
)
from splat.gaussians import Gaussians

MAGIC = 0x5053474E
HEADER = struct.Struct("<IIIBBBB")
HEADER_V4 = struct.Struct("<IIIBBBBI12x")
TOC_ENTRY = struct.Struct("<QQ")
COLOR_SCALE = 0.15
DEFAULT_FRACTIONAL_BITS = 12  # ~0.24 mm steps for metre-scale scenes, range +-2048
FLAG_ANTIALIASED = 0x1
FLAG_EXTENSIONS = 0x2
# Deflate cannot expand data by more than ~1032x; a header claiming more than that is lying. We hold
# zstd (v4) streams to the same bound so a tiny file can never make us allocate gigabytes.
MAX_INFLATE_RATIO = 1100
AXES = ("ply", "rub")
_SQRT1_2 = np.float64(np.sqrt(0.5))
_INT24_MAX = (1 << 23) - 1

# Sign of each SH coefficient (degree 1..3, gsplat/3DGS order) under the RDF <-> RUB flip (y -> -y, z -> -z).
SH_FLIP_RDF_RUB = np.array([-1, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1], dtype=np.float64)
AXIS_FLIP_RDF_RUB = np.array([1.0, -1.0, -1.0])


def _block_sizes(version: int, n: int, k: int) -> list[int]:
    """Bytes of positions, alphas, colours, scales, rotations, sh for n points with k SH rest coefficients."""
    return [9 * n, n, 3 * n, 3 * n, (3 if version == 2 else 4) * n, 3 * k * n]


def _flips(axes: str, k: int, path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(per-axis sign [3], per-SH-coefficient sign [k]) taking our frame to the file's."""
    if axes not in AXES:
        raise fail(path, f"axes must be one of {AXES}, got {axes!r}")
    if axes == "rub":
        return AXIS_FLIP_RDF_RUB, SH_FLIP_RDF_RUB[:k]
    return np.ones(3), np.ones(k)


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


# --- rotations ------------------------------------------------------------------------------------------


def _pack_rot_v2(q: np.ndarray) -> np.ndarray:
    """Unit quaternions [N, 4] (x, y, z, w) -> [N, 3] u8; w is recovered from unit length and w >= 0.

    Plain rounding of x, y, z loses a lot when w is small (w = sqrt(1 - |xyz|^2) amplifies the error),
    so of the 8 floor/ceil choices we keep the one whose decoded rotation is closest to the input.
    """
    q = np.where(q[:, 3:4] < 0, -q, q)
    scaled = q[:, :3] * 127.5 + 127.5
    lo = np.clip(np.floor(scaled), 0, 255)
    best, best_dot = _to_u8(scaled), np.full(len(q), -1.0)
    for corner in range(8):
        up = np.array([(corner >> i) & 1 for i in range(3)], dtype=np.float64)
        cand = np.clip(lo + up, 0, 255)
        decoded = _unpack_rot_v2(cand)  # not unit length when |xyz| > 1; renderers normalise
        dot = np.abs((decoded * q).sum(axis=1)) / np.linalg.norm(decoded, axis=1)
        better = dot > best_dot
        best[better], best_dot[better] = cand[better].astype(np.uint8), dot[better]
    return best


def _unpack_rot_v2(r: np.ndarray) -> np.ndarray:
    xyz = r.astype(np.float64) / 127.5 - 1.0
    w = np.sqrt(np.maximum(0.0, 1.0 - (xyz**2).sum(axis=1)))
    return np.concatenate([xyz, w[:, None]], axis=1)


def _pack_rot_v3(q: np.ndarray) -> np.ndarray:
    """Unit quaternions [N, 4] (x, y, z, w) -> [N] u32 "smallest three" codes."""
    n = len(q)
    largest = np.argmax(np.abs(q), axis=1)
    q = np.where(q[np.arange(n), largest][:, None] < 0, -q, q)  # make the dropped component positive
    comp = largest.astype(np.uint32)
    for i in range(4):
        keep = largest != i
        mag = np.minimum(np.floor(511.0 * np.abs(q[:, i]) / _SQRT1_2 + 0.5), 511).astype(np.uint32)
        neg = (q[:, i] < 0).astype(np.uint32)
        comp = np.where(keep, (comp << np.uint32(10)) | (neg << np.uint32(9)) | mag, comp)
    return comp.astype("<u4")


def _unpack_rot_v3(codes: np.ndarray) -> np.ndarray:
    comp = codes.astype(np.uint32)
    largest = (comp >> np.uint32(30)).astype(np.int64)
    q = np.zeros((len(comp), 4))
    for i in range(3, -1, -1):  # the last-packed component sits in the low bits
        here = largest != i
        mag = (comp & np.uint32(511)).astype(np.float64)
        neg = ((comp >> np.uint32(9)) & np.uint32(1)).astype(bool)
        val = _SQRT1_2 * mag / 511.0
        q[:, i] = np.where(here, np.where(neg, -val, val), 0.0)
        comp = np.where(here, comp >> np.uint32(10), comp)
    rest = (q**2).sum(axis=1)
    q[np.arange(len(q)), largest] = np.sqrt(np.maximum(0.0, 1.0 - rest))
    return q


# --- encode / decode ------------------------------------------------------------------------------------


def _quantise_sh(x: np.ndarray, bits: int) -> np.ndarray:
    bucket = 1 << (8 - bits)
    q = np.rint(np.clip(x, -2.0, 2.0) * 128.0).astype(np.int32) + 128  # beyond +-2 clips to 0/255 anyway
    q = (q + bucket // 2) // bucket * bucket
    return np.clip(q, 0, 255).astype(np.uint8)


def _fractional_bits(means: np.ndarray, path: PathLike) -> int:
    extent = float(np.abs(means).max()) if means.size else 0.0
    bits = DEFAULT_FRACTIONAL_BITS
    while bits > 0 and round(extent * (1 << bits)) > _INT24_MAX:
        bits -= 1
    if round(extent * (1 << bits)) > _INT24_MAX:
        raise fail(path, f"positions up to {extent:.3g} exceed the 24-bit range of .spz; scale the scene")
    return bits


def encode_spz(
    scene: SceneArrays,
    path: PathLike,
    version: int = 2,
    axes: str = "ply",
    sh_bits: tuple[int, int] = (5, 4),
) -> bytes:
    """SceneArrays -> uncompressed spz payload (16-byte header + attribute blocks)."""
    if version not in (2, 3):
        raise fail(path, f"can write .spz versions 2 and 3, not {version}")
    n, k = len(scene), scene.shN.shape[1]
    axis_flip, sh_flip = _flips(axes, k, path)
    bits = _fractional_bits(scene.means, path)

    fixed = np.rint(scene.means.astype(np.float64) * axis_flip * (1 << bits)).astype("<i4")
    positions = fixed.view(np.uint8).reshape(n, 3, 4)[:, :, :3]  # low 3 bytes of each little-endian int32

    q = normalised_quats(scene.quats)  # (w, x, y, z)
    q_xyzw = np.concatenate([q[:, 1:] * axis_flip, q[:, :1]], axis=1)
    rotations = _pack_rot_v3(q_xyzw) if version >= 3 else _pack_rot_v2(q_xyzw)

    sh = scene.shN * sh_flip[:, None].astype(np.float32)
    sh_q = np.concatenate([_quantise_sh(sh[:, :3], sh_bits[0]), _quantise_sh(sh[:, 3:], sh_bits[1])], axis=1)

    header = HEADER.pack(MAGIC, version, n, scene.sh_degree, bits, 0, 0)
    blocks = [
        positions,
        _to_u8(sigmoid(scene.opacities) * 255.0),
        _to_u8(scene.sh0.astype(np.float64) * (COLOR_SCALE * 255.0) + 127.5),
        _to_u8((scene.scales.astype(np.float64) + 10.0) * 16.0),
        rotations,
        sh_q,
    ]
    return header + b"".join(np.ascontiguousarray(b).tobytes() for b in blocks)


def decode_spz(blocks: bytes, version: int, n: int, degree: int, bits: int, axes: str = "ply") -> SceneArrays:
    """Uncompressed attribute blocks (everything after the header) -> SceneArrays in our frame."""
    k = (degree + 1) ** 2 - 1
    axis_flip, sh_flip = _flips(axes, k, "<spz>")
    off = 0

    def take(count: int) -> np.ndarray:
        nonlocal off
        block = np.frombuffer(blocks, dtype=np.uint8, count=count, offset=off)
        off += count
        return block

    p = take(n * 9).reshape(n, 3, 3).astype(np.int32)
    fixed = p[..., 0] | (p[..., 1] << 8) | (p[..., 2] << 16)
    fixed = (fixed ^ 0x800000) - 0x800000  # sign-extend 24 -> 32 bits
    means = fixed / float(1 << bits) * axis_flip
    alphas = take(n).astype(np.float64) / 255.0
    colours = take(n * 3).reshape(n, 3).astype(np.float64)
    scales = take(n * 3).reshape(n, 3).astype(np.float64) / 16.0 - 10.0
    if version >= 3:
        q_xyzw = _unpack_rot_v3(take(n * 4).view("<u4"))
    else:
        q_xyzw = _unpack_rot_v2(take(n * 3).reshape(n, 3))
    quats = np.concatenate([q_xyzw[:, 3:], q_xyzw[:, :3] * axis_flip], axis=1)
    sh = (take(n * k * 3).reshape(n, k, 3).astype(np.float64) - 128.0) / 128.0
    return SceneArrays(
        means=means.astype(np.float32),
        scales=scales.astype(np.float32),
        quats=quats.astype(np.float32),
        # 8-bit alphas of 0 or 255 would be logit -inf/+inf; clamp half a step inside.
        opacities=logit(alphas, eps=0.5 / 255.0).astype(np.float32),
        sh0=((colours / 255.0 - 0.5) / COLOR_SCALE).astype(np.float32),
        shN=(sh * sh_flip[:, None]).astype(np.float32),
    )


# --- files ----------------------------------------------------------------------------------------------


def write_spz_arrays(scene: SceneArrays, path: PathLike, version: int = 2, axes: str = "ply") -> None:
    scene.check_finite(path, "save it")
    payload = encode_spz(scene, path, version=version, axes=axes)
    compressed = gzip.compress(payload, compresslevel=6, mtime=0)

    def write(f: IO[bytes]) -> None:
        f.write(compressed)

    atomic_write(path, write)


def save_spz(gaussians: Gaussians, path: PathLike, version: int = 2, axes: str = "ply") -> None:
    """Export Gaussians as .spz (gzip, quantised; version 2 and the .ply's frame by default)."""
    write_spz_arrays(SceneArrays.from_gaussians(gaussians), path, version=version, axes=axes)


def _read_all(path: PathLike) -> bytes:
    size = check_readable(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(size)
    except OSError as e:
        raise fail(path, f"cannot read file ({e.strerror or e})") from e
    if len(raw) != size:
        raise fail(path, f"file changed while reading (expected {size} bytes, read {len(raw)})")
    return raw


def _check_header(path: PathLike, magic: int, version: int, degree: int, bits: int) -> None:
    if magic != MAGIC:
        raise fail(path, f"no spz magic (0x{magic:08x}, expected 0x{MAGIC:08x}), so not a .spz file")
    if version not in (2, 3, 4):
        raise fail(path, f"unsupported .spz version {version} (this reader handles 2, 3 and 4)")
    if degree > 3:
        raise fail(path, f"SH degree {degree} is not supported (0..3)")
    if bits > 23:
        raise fail(path, f"fractionalBits {bits} is out of range (0..23)")


def _check_claim(path: PathLike, n: int, expected: int, file_size: int) -> None:
    if expected > file_size * MAX_INFLATE_RATIO:
        raise fail(
            path,
            f"header claims {n} points ({expected} bytes) but a {file_size}-byte file cannot hold that much "
            "(file truncated or header wrong)",
        )
    # The ratio alone let a truthful 185 KB file inflate to 3.2 GB: an absolute cap on points too.
    check_point_count(path, n)


def _read_gzip(path: PathLike, raw: bytes) -> tuple[dict, bytes | None]:
    """Versions 2/3: validate the header; with the attribute blocks unless only the header is wanted."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        head = d.decompress(raw, HEADER.size)
    except zlib.error as e:
        raise fail(path, f"corrupt gzip stream ({e})") from e
    if len(head) < HEADER.size:
        raise fail(path, "truncated .spz: the gzip stream ends inside the 16-byte header")
    magic, version, n, degree, bits, flags, _ = HEADER.unpack(head)
    _check_header(path, magic, version, degree, bits)
    if version == 4:
        raise fail(path, "version 4 inside a gzip stream is not a valid .spz")
    if flags & FLAG_EXTENSIONS:
        raise fail(path, "legacy .spz with extensions (flag 0x2) is not supported")
    info = {"version": version, "count": n, "sh_degree": degree, "fractional_bits": bits, "flags": flags}
    expected = sum(_block_sizes(version, n, (degree + 1) ** 2 - 1))
    _check_claim(path, n, expected, len(raw))
    try:
        blocks = d.decompress(d.unconsumed_tail, expected)
        if len(blocks) == expected and not d.eof:
            d.decompress(d.unconsumed_tail, 1 << 16)  # reach the gzip trailer so its CRC is checked
    except zlib.error as e:
        raise fail(path, f"corrupt gzip stream ({e})") from e
    if len(blocks) < expected:
        raise fail(path, f"truncated .spz: expected {expected} bytes of splat data, found {len(blocks)}")
    if not d.eof:
        raise fail(path, "gzip stream is truncated or has unexpected trailing data")
    return info, blocks


def _read_v4(path: PathLike, raw: bytes) -> tuple[dict, bytes]:
    """Version 4: plaintext header + table of contents + one zstd stream per attribute block."""
    if len(raw) < HEADER_V4.size:
        raise fail(path, "truncated .spz: the file ends inside the 32-byte header")
    magic, version, n, degree, bits, flags, n_streams, toc = HEADER_V4.unpack_from(raw)
    _check_header(path, magic, version, degree, bits)
    if version != 4:
        raise fail(path, f"plaintext .spz container with version {version} (expected 4)")
    k = (degree + 1) ** 2 - 1
    sizes = _block_sizes(4, n, k)[: 6 if k else 5]
    if n_streams != len(sizes):
        raise fail(path, f"{n_streams} data streams, expected {len(sizes)} for SH degree {degree}")
    _check_claim(path, n, sum(sizes), len(raw))
    data_start = toc + n_streams * TOC_ENTRY.size
    if toc < HEADER_V4.size or data_start > len(raw):
        raise fail(path, f"table of contents at byte {toc} lies outside the {len(raw)}-byte file")
    try:
        import zstandard
    except ImportError as e:
        raise fail(
            path, "reading .spz version 4 needs the 'zstandard' package (pip install zstandard)"
        ) from e
    out, offset = [], data_start
    for i, want in enumerate(sizes):
        packed_size, unpacked_size = TOC_ENTRY.unpack_from(raw, toc + i * TOC_ENTRY.size)
        if unpacked_size != want or offset + packed_size > len(raw):
            raise fail(path, f"stream {i} sizes ({packed_size}, {unpacked_size}) do not fit the file/header")
        chunk = raw[offset : offset + packed_size]
        offset += packed_size
        try:
            # A bounded read: the frame's own size claims never decide how much we allocate.
            block = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(chunk)).read(want + 1)
        except zstandard.ZstdError as e:
            raise fail(path, f"corrupt zstd stream {i} ({e})") from e
        if len(block) != want:
            raise fail(path, f"stream {i} decompresses to {len(block)} bytes, expected {want}")
        out.append(block)
    info = {"version": 4, "count": n, "sh_degree": degree, "fractional_bits": bits, "flags": flags}
    return info, b"".join(out)


def read_spz_blocks(path: PathLike) -> tuple[dict, bytes]:
    """(header fields, uncompressed attribute blocks) of a .spz file, after all bounds checks."""
    raw = _read_all(path)
    if raw[:2] == b"\x1f\x8b":
        return _read_gzip(path, raw)
    if raw[:4] == b"NGSP":
        return _read_v4(path, raw)
    raise fail(path, f"not a .spz file (expected a gzip stream or 'NGSP', it starts with {raw[:8]!r})")


def read_spz(path: PathLike, axes: str = "ply") -> tuple[dict, SceneArrays]:
    """(header fields, SceneArrays) of a .spz file."""
    _flips(axes, 0, path)  # reject a bad `axes` before reading anything
    info, blocks = read_spz_blocks(path)
    scene = decode_spz(
        blocks, info["version"], info["count"], info["sh_degree"], info["fractional_bits"], axes=axes
    )
    scene.check_finite(path, "load it")
    return info, scene


def read_spz_arrays(path: PathLike, axes: str = "ply") -> SceneArrays:
    return read_spz(path, axes=axes)[1]


def load_spz(path: PathLike, device: Device = "cpu", axes: str = "ply") -> Gaussians:
    """Read a .spz file (versions 2-4) into Gaussians; `axes` as used when it was saved."""
    return read_spz_arrays(path, axes=axes).to_gaussians(device)
