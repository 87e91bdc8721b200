"""3DGS .ply files in the INRIA layout: a bounded header parser, a reader that finds fields by name, a writer.

Written files are `binary_little_endian`, all float32, properties in this order:

    x y z nx ny nz f_dc_0..2 f_rest_0..f_rest_{3K-1} opacity scale_0..2 rot_0..3

with opacity as a logit, scales as natural logs, rotation as (w, x, y, z), normals zero and f_rest
channel-major (all red coefficients, then green, then blue). Positions are written in the scene's own
frame (for stitch: OpenCV axes, x right, y down, z forward, the usual frame of 3DGS training output).

Reading accepts any PLY that has the required float properties on a `vertex` element: extra or
reordered properties, ascii and big-endian bodies (the latter two via plyfile). Before any body byte
is read the header is bounded (64 KiB, 2048 properties) and every element's declared size is checked
against the file size, so a lying header can never make us allocate more than the file holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import IO

import numpy as np

from splat.formats.scene_arrays import (
    Device,
    PathLike,
    SceneArrays,
    as_bytes,
    atomic_write,
    check_point_count,
    check_readable,
    fail,
)
from splat.gaussians import Gaussians

MAX_HEADER_BYTES = 64 * 1024
MAX_PROPERTIES = 2048
MAX_ELEMENTS = 64

# PLY type names (both spellings) -> numpy type code without byte order.
PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}
FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity")
REQUIRED += tuple(f"scale_{i}" for i in range(3)) + tuple(f"rot_{i}" for i in range(4))
_REST_RE = re.compile(r"f_rest_(\d+)")


@dataclass
class PlyProperty:
    name: str
    type_name: str  # as written in the header, e.g. "float"
    code: str  # numpy code without byte order, e.g. "f4"
    list_count_code: str | None = None  # set for `property list <count> <item> name`


@dataclass
class PlyElementHeader:
    name: str
    count: int
    properties: list[PlyProperty] = field(default_factory=list)

    @property
    def has_lists(self) -> bool:
        return any(p.list_count_code is not None for p in self.properties)

    def row_bytes(self) -> int:
        """Exact bytes per row for fixed-size elements; the minimum (every list empty) otherwise."""
        sizes = [np.dtype(p.list_count_code or p.code).itemsize for p in self.properties]
        return sum(sizes)

    def property(self, name: str) -> PlyProperty | None:
        return next((p for p in self.properties if p.name == name), None)


@dataclass
class PlyHeader:
    format: str  # "ascii" | "binary_little_endian" | "binary_big_endian"
    elements: list[PlyElementHeader]
    body_offset: int  # byte offset of the first body byte
    comments: list[str] = field(default_factory=list)

    def element(self, name: str) -> PlyElementHeader | None:
        return next((e for e in self.elements if e.name == name), None)


# --- header ---------------------------------------------------------------------------------------------


def read_header(path: PathLike, f: IO[bytes], file_size: int) -> PlyHeader:
    """Parse and bound-check a PLY header; raises SceneFileError on anything malformed or oversized."""
    head = f.read(min(MAX_HEADER_BYTES, file_size))
    if not (head.startswith(b"ply\n") or head.startswith(b"ply\r\n")):
        start = head[:16]
        raise fail(path, f"not a PLY file (it starts with {start!r}, expected b'ply\\n')")
    end = re.search(rb"(?:^|\n)end_header[ \t]*\r?\n", head)
    if end is None:
        if file_size > MAX_HEADER_BYTES:
            raise fail(path, f"PLY header has no end_header line within the first {MAX_HEADER_BYTES} bytes")
        raise fail(path, "PLY header is truncated (no end_header line)")
    try:
        text = head[: end.start()].decode("ascii")
    except UnicodeDecodeError as e:
        raise fail(path, f"PLY header contains a non-ASCII byte at offset {e.start}") from e

    fmt: str | None = None
    elements: list[PlyElementHeader] = []
    comments: list[str] = []
    n_props = 0
    for lineno, raw in enumerate(text.split("\n")[1:], start=2):
        words = raw.strip().split()
        if not words:
            continue
        key = words[0]
        where = f"PLY header line {lineno}"
        if key in ("comment", "obj_info"):
            comments.append(raw.strip()[len(key) :].strip())
        elif key == "format":
            if len(words) != 3 or words[1] not in FORMATS:
                raise fail(path, f"{where}: unsupported format line {raw.strip()[:80]!r}")
            fmt = words[1]
        elif key == "element":
            if len(words) != 3 or not re.fullmatch(r"\d{1,18}", words[2]):
                raise fail(path, f"{where}: malformed element line {raw.strip()[:80]!r}")
            if len(elements) >= MAX_ELEMENTS:
                raise fail(path, f"PLY header declares more than {MAX_ELEMENTS} elements")
            if any(e.name == words[1] for e in elements):
                raise fail(path, f"{where}: element '{words[1]}' declared twice")
            elements.append(PlyElementHeader(words[1], int(words[2])))
        elif key == "property":
            if not elements:
                raise fail(path, f"{where}: property before any element")
            n_props += 1
            if n_props > MAX_PROPERTIES:
                raise fail(path, f"PLY header declares more than {MAX_PROPERTIES} properties")
            elements[-1].properties.append(_parse_property(path, where, words, elements[-1]))
        else:
            raise fail(path, f"{where}: unknown keyword {key[:40]!r}")
    if fmt is None:
        raise fail(path, "PLY header has no format line")
    return PlyHeader(fmt, elements, body_offset=end.end(), comments=comments)


def _parse_property(path: PathLike, where: str, words: list[str], element: PlyElementHeader) -> PlyProperty:
    if len(words) == 3 and words[1] in PLY_TYPES:
        prop = PlyProperty(words[2], words[1], PLY_TYPES[words[1]])
    elif len(words) == 5 and words[1] == "list" and words[2] in PLY_TYPES and words[3] in PLY_TYPES:
        if PLY_TYPES[words[2]][0] == "f":
            raise fail(path, f"{where}: list count type must be an integer, got {words[2]}")
        prop = PlyProperty(words[4], words[3], PLY_TYPES[words[3]], list_count_code=PLY_TYPES[words[2]])
    else:
        raise fail(path, f"{where}: malformed property line {' '.join(words)[:80]!r}")
    if element.property(prop.name) is not None:
        raise fail(path, f"{where}: property '{prop.name}' declared twice in element '{element.name}'")
    return prop


def check_body_size(path: PathLike, header: PlyHeader, file_size: int) -> None:
    """Refuse headers whose declared element sizes cannot fit in the file (truncation or lying counts)."""
    body = file_size - header.body_offset
    if header.format == "ascii":
        # Every value is at least one character plus one separator.
        tokens = sum(e.count * len(e.properties) for e in header.elements)
        if tokens > (body + 1) // 2:
            raise fail(
                path,
                f"header declares {tokens} ascii values but the body has only {body} bytes "
                "(file truncated or header count wrong)",
            )
        return
    needed = 0
    for e in header.elements:
        needed += e.count * e.row_bytes()
        if needed > body:
            at_least = "at least " if e.has_lists else ""
            raise fail(
                path,
                f"header declares {e.count} '{e.name}' rows needing {at_least}{needed} body bytes "
                f"but the file has only {body} (file truncated or header count wrong)",
            )


# --- reading --------------------------------------------------------------------------------------------


def read_vertex_table(path: PathLike) -> tuple[PlyHeader, np.ndarray]:
    """The header and the `vertex` element as a structured array, after all bounds checks."""
    file_size = check_readable(path)
    try:
        with open(path, "rb") as f:
            header = read_header(path, f, file_size)
            vertex = header.element("vertex")
            if vertex is None:
                names = [e.name for e in header.elements]
                raise fail(path, f"PLY has no 'vertex' element (elements: {names})")
            lists = [p.name for p in vertex.properties if p.list_count_code is not None]
            if lists:
                raise fail(path, f"vertex property '{lists[0]}' is a list; 3DGS needs scalar properties")
            check_body_size(path, header, file_size)
            check_point_count(path, vertex.count)
            before = header.elements[: header.elements.index(vertex)]
            if header.format == "ascii" or any(e.has_lists for e in before):
                table = _read_with_plyfile(path, f)
            else:
                table = _read_binary(path, f, header, vertex, before)
    except OSError as e:
        raise fail(path, f"cannot read file ({e.strerror or e})") from e
    return header, table


def _read_binary(
    path: PathLike, f: IO[bytes], header: PlyHeader, vertex: PlyElementHeader, before: list
) -> np.ndarray:
    order = FORMATS[header.format]
    dtype = np.dtype([(p.name, order + p.code) for p in vertex.properties])
    offset = header.body_offset + sum(e.count * e.row_bytes() for e in before)
    f.seek(offset)
    nbytes = vertex.count * dtype.itemsize
    data = f.read(nbytes)
    if len(data) != nbytes:  # the file shrank after we checked its size
        raise fail(path, f"vertex data truncated: expected {nbytes} bytes, read {len(data)}")
    return np.frombuffer(data, dtype=dtype, count=vertex.count)


def _read_with_plyfile(path: PathLike, f: IO[bytes]) -> np.ndarray:
    """Ascii bodies and files with list elements before the vertices: plyfile, with every error wrapped."""
    import plyfile

    f.seek(0)
    try:
        data = plyfile.PlyData.read(f, mmap=False)
        return np.asarray(data["vertex"].data)
    except Exception as e:  # plyfile raises many types (PlyParseError, ValueError, IndexError, ...)
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise fail(path, f"malformed PLY body ({msg})") from e


def _float_column(path: PathLike, header: PlyHeader, table: np.ndarray, name: str) -> np.ndarray:
    prop = header.element("vertex").property(name)
    if prop.code[0] != "f":
        raise fail(path, f"vertex property '{name}' has type {prop.type_name}; 3DGS PLY needs float")
    with np.errstate(over="ignore"):  # double -> float overflow becomes Inf, caught by check_finite
        return table[name].astype(np.float32)


def _rest_count(path: PathLike, header: PlyHeader) -> int:
    names = [p.name for p in header.element("vertex").properties]
    idx = sorted(int(m.group(1)) for name in names if (m := _REST_RE.fullmatch(name)))
    if idx != list(range(len(idx))):
        raise fail(path, f"f_rest_* properties are not numbered 0..{len(idx) - 1} (found {idx[:5]}...)")
    if len(idx) not in (0, 9, 24, 45):
        hint = "; SH degree 4 is not supported" if len(idx) == 72 else ""
        raise fail(path, f"{len(idx)} f_rest_* properties match no SH degree 0..3 (0, 9, 24 or 45){hint}")
    return len(idx)


def read_ply_arrays(path: PathLike) -> SceneArrays:
    header, table = read_vertex_table(path)
    vertex = header.element("vertex")
    missing = [n for n in REQUIRED if vertex.property(n) is None]
    if missing:
        hint = " (this looks like a compressed PLY; convert it to a plain 3DGS .ply first)"
        hint = hint if header.element("chunk") is not None else ""
        raise fail(path, f"not a 3DGS PLY: vertex element lacks {missing}{hint}")
    n_rest = _rest_count(path, header)

    def cols(*names: str) -> np.ndarray:
        columns = [_float_column(path, header, table, n) for n in names]
        return np.stack(columns, axis=1).reshape(len(table), len(names))

    n = len(table)
    k = n_rest // 3
    rest = cols(*(f"f_rest_{i}" for i in range(n_rest))) if n_rest else np.zeros((n, 0), np.float32)
    scene = SceneArrays(
        means=cols("x", "y", "z"),
        scales=cols("scale_0", "scale_1", "scale_2"),
        quats=cols("rot_0", "rot_1", "rot_2", "rot_3"),
        opacities=cols("opacity")[:, 0],
        sh0=cols("f_dc_0", "f_dc_1", "f_dc_2"),
        shN=rest.reshape(n, 3, k).transpose(0, 2, 1).copy(),  # channel-major file -> [N, K, 3]
    )
    scene.check_finite(path, "load it")
    return scene


def load_ply(path: PathLike, device: Device = "cpu") -> Gaussians:
    """Read a 3DGS .ply into Gaussians; any problem with the file raises SceneFileError."""
    return read_ply_arrays(path).to_gaussians(device)


# --- writing --------------------------------------------------------------------------------------------


def ply_property_names(sh_degree: int) -> list[str]:
    """The INRIA property order for an SH degree 0..3."""
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(n_rest)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    return names


def write_ply_arrays(scene: SceneArrays, path: PathLike) -> None:
    scene.check_finite(path, "save it")
    n, k = len(scene), scene.shN.shape[1]
    names = ply_property_names(scene.sh_degree)
    rows = np.concatenate(
        [
            scene.means,
            np.zeros((n, 3), np.float32),
            scene.sh0,
            scene.shN.transpose(0, 2, 1).reshape(n, 3 * k),  # [N, K, 3] -> channel-major
            scene.opacities[:, None],
            scene.scales,
            scene.quats,
        ],
        axis=1,
    ).astype("<f4")
    assert rows.shape == (n, len(names))
    lines = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    lines += [f"property float {name}" for name in names]
    lines += ["end_header", ""]
    header = "\n".join(lines).encode("ascii")

    def write(f: IO[bytes]) -> None:
        f.write(header)
        f.write(as_bytes(rows))

    atomic_write(path, write)


def save_ply(gaussians: Gaussians, path: PathLike) -> None:
    """Write Gaussians as an INRIA-layout 3DGS .ply (atomically: old file intact on any failure)."""
    write_ply_arrays(SceneArrays.from_gaussians(gaussians), path)
