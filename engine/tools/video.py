"""`stitch video`: a smooth fly-through of a scene, rendered and encoded to mp4 (GIF or PNGs as fallbacks).

The path passes through keyframe cameras (a run's generation cameras, or a JSON camera path): positions
on a clamped cubic spline (starts and ends at rest), rotations on a C2 rotation spline (scipy), keyframe
times spaced by how far the camera moves (rotation angle + translation), so the speed is even. A run's
cameras are visited in the order that makes the shortest tour (stage: -25, 0, +25 degrees, not 0, +25, -25).
"""

from __future__ import annotations

import errno
import itertools
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from engine.trajectory import trajectory
from splat.cameras import Camera, rotation_ypr
from splat.errors import StitchError
from splat.formats.camera_path import load_camera_path

VIDEO_SUFFIXES = (".mp4", ".gif")


def pose_distance(a: Camera, b: Camera, length_scale: float) -> float:
    """Rotation angle (radians) between two cameras plus their centres' distance / length_scale."""
    r = a.camera_to_world[:3, :3].T @ b.camera_to_world[:3, :3]
    angle = float(np.arccos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0)))
    return angle + float(np.linalg.norm(a.center - b.center)) / length_scale


def _length_scale(cameras: Sequence[Camera]) -> float:
    centres = np.stack([c.center for c in cameras])
    spread = float(np.linalg.norm(centres - centres.mean(0), axis=1).max())
    return max(spread, 1.0)  # a metre-ish scale: rotation-only paths count angles alone


def tour_order(cameras: Sequence[Camera]) -> list[int]:
    """Visiting order with the shortest total pose distance among the given order and the
    nearest-neighbour chains from every start (exhaustive for up to 7 cameras)."""
    n = len(cameras)
    if n <= 2:
        return list(range(n))
    scale = _length_scale(cameras)
    d = np.array([[pose_distance(a, b, scale) for b in cameras] for a in cameras])

    def length(order: Sequence[int]) -> float:
        return float(sum(d[i, j] for i, j in itertools.pairwise(order)))

    candidates = [list(range(n))]
    if n <= 7:
        candidates += [list(p) for p in itertools.permutations(range(n)) if p[0] < p[-1]]
    for start in range(n):
        order, left = [start], set(range(n)) - {start}
        while left:
            nxt = min(left, key=lambda j: d[order[-1], j])
            order.append(nxt)
            left.remove(nxt)
        candidates.append(order)
    best = min(candidates, key=length)
    return best if length(best) < length(candidates[0]) - 1e-9 else candidates[0]


def smooth_path(keyframes: Sequence[Camera], n_frames: int) -> list[Camera]:
    """`n_frames` cameras along a smooth path through `keyframes` (first and last frame = end keyframes)."""
    from scipy.interpolate import CubicSpline
    from scipy.spatial.transform import Rotation, RotationSpline

    if n_frames < 2:
        raise StitchError(f"a video needs at least 2 frames, got {n_frames}")
    keys = [keyframes[0]]
    scale = _length_scale(keyframes)
    for cam in keyframes[1:]:  # repeated keyframes would make the spline times collide
        if pose_distance(keys[-1], cam, scale) > 1e-6:
            keys.append(cam)
    if len(keys) == 1:  # one camera: sway 8 degrees either side of it
        base = keys[0]
        keys = []
        for yaw in (-8.0, 0.0, 8.0):
            c2w = base.camera_to_world.copy()
            c2w[:3, :3] = c2w[:3, :3] @ rotation_ypr(yaw)
            keys.append(Camera(base.width, base.height, base.K, np.linalg.inv(c2w)))
    steps = [pose_distance(a, b, scale) for a, b in itertools.pairwise(keys)]
    times = np.concatenate([[0.0], np.cumsum(steps)])
    times /= times[-1]
    rotations = Rotation.from_matrix(np.stack([k.camera_to_world[:3, :3] for k in keys]))
    rot_spline = RotationSpline(times, rotations)
    centres = np.stack([k.center for k in keys])
    pos_spline = CubicSpline(times, centres, axis=0, bc_type="clamped")
    # Ease in and out along the path (smoothstep of time), so the video starts and stops gently.
    u = np.linspace(0.0, 1.0, n_frames)
    u = u * u * (3 - 2 * u)
    rots = rot_spline(u).as_matrix()
    pos = pos_spline(u)
    path = []
    for r, c in zip(rots, pos, strict=True):
        w2c = np.eye(4)
        w2c[:3, :3] = r.T
        w2c[:3, 3] = -r.T @ c
        path.append(Camera(keys[0].width, keys[0].height, keys[0].K, w2c))
    return path


def even_size(camera: Camera, width: int | None) -> Camera:
    """The camera at `width` (default: its own), both sides rounded down to even numbers (H.264 needs it)."""
    w = camera.width if width is None else int(width)
    h = round(camera.height * w / camera.width)
    w, h = max(2, w - w % 2), max(2, h - h % 2)
    return camera.scaled(w, h)


@torch.no_grad()
def render_frames(gaussians, cameras: Sequence[Camera], progress: bool = True) -> Iterable[np.ndarray]:
    """uint8 [H, W, 3] frames of the scene from each camera (black background, as generation renders)."""
    from splat.render import render_camera

    tty = sys.stderr.isatty()
    n = len(cameras)
    for i, cam in enumerate(cameras):
        rgb = render_camera(gaussians, cam).rgb[0].clamp(0, 1).cpu().numpy()
        last = i + 1 == n
        if progress and (tty or last or (i + 1) % max(1, n // 10) == 0):  # logs: a line every 10 %
            print(f"frame {i + 1}/{n}", end="\r" if tty and not last else "\n", file=sys.stderr, flush=True)
        yield (rgb * 255.0 + 0.5).astype(np.uint8)


def ffmpeg_available() -> bool:
    try:
        import imageio_ffmpeg

        return Path(imageio_ffmpeg.get_ffmpeg_exe()).is_file()
    except (ImportError, RuntimeError):
        return False


def write_video(frames: Iterable[np.ndarray], output: Path, fps: int) -> Path:
    """Encode frames to `output`: .mp4 (H.264 through imageio-ffmpeg's bundled ffmpeg), .gif, or a
    folder of PNGs when `output` has no suffix. An .mp4 without an encoder falls back to a .gif beside it,
    with a message. Returns the path written."""

    output = Path(output)
    suffix = output.suffix.lower()
    if suffix == ".mp4" and not ffmpeg_available():
        fallback = output.with_suffix(".gif")
        print(
            f"no mp4 encoder here (pip install imageio imageio-ffmpeg); writing {fallback} instead",
            file=sys.stderr,
        )
        output, suffix = fallback, ".gif"
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StitchError(f"cannot create {output.parent} ({exc.strerror or exc}); pick another -o") from exc
    if suffix in VIDEO_SUFFIXES:
        # Encode beside the target and rename only a complete, checked file: a full disk or a failed
        # encoder never replaces a good video with a truncated one.
        tmp = output.with_name(f".{output.name}.tmp{os.getpid()}{suffix}")
        try:
            if suffix == ".mp4":
                _write_mp4(frames, tmp, fps)
                _check_mp4(tmp)
            else:
                _write_gif(frames, tmp, fps)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            tmp.replace(output)
        except OSError as exc:
            raise StitchError(
                f"cannot write {output} ({exc.strerror or exc}); free space or fix permissions, then run "
                "the same command again"
            ) from exc
        finally:
            tmp.unlink(missing_ok=True)
        return output
    if suffix:
        raise StitchError(
            f"video output must end in {' or '.join(VIDEO_SUFFIXES)} (or be a folder), got {output}"
        )
    from engine.images import save_png

    try:
        output.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(frames):
            save_png(frame, output / f"frame_{i:04d}.png")  # atomic: no half-written frame under its name
    except OSError as exc:
        where = exc.filename or output
        raise StitchError(
            f"cannot write {where} ({exc.strerror or exc}); free space or fix permissions, then run the "
            "same command again"
        ) from exc
    return output


def _write_mp4(frames: Iterable[np.ndarray], path: Path, fps: int) -> None:
    import imageio.v2 as imageio

    writer = imageio.get_writer(
        path, fps=fps, codec="libx264", quality=8, pixelformat="yuv420p", macro_block_size=2,
        ffmpeg_log_level="error",
    )  # fmt: skip
    try:
        for frame in frames:
            writer.append_data(frame)
    except (BrokenPipeError, RuntimeError) as exc:  # ffmpeg died (disk full): say so as an OSError
        raise OSError(errno.EIO, f"the encoder stopped ({_first_line(exc)})", str(path)) from exc
    finally:
        try:
            writer.close()
        except (RuntimeError, BrokenPipeError) as exc:
            raise OSError(errno.EIO, f"the encoder failed ({_first_line(exc)})", str(path)) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _check_mp4(path: Path) -> None:
    """OSError unless `path` is a complete MP4: top-level boxes that tile the file exactly, with a 'moov'
    (ffmpeg writes it last; without it no player can open the file)."""
    size = path.stat().st_size
    seen = set()
    with open(path, "rb") as f:
        pos = 0
        while pos < size:
            f.seek(pos)
            head = f.read(16)
            if len(head) < 8:
                break
            box, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if box == 1 and len(head) == 16:
                box = int.from_bytes(head[8:16], "big")
            elif box == 0:
                box = size - pos
            if box < 8:
                break
            seen.add(kind)
            pos += box
    if pos != size or b"moov" not in seen or b"mdat" not in seen:
        raise OSError(
            errno.EIO, "the encoder left an incomplete MP4 (no moov/mdat or truncated boxes)", str(path)
        )


def _write_gif(frames: Iterable[np.ndarray], path: Path, fps: int) -> None:
    """Stream frames into a GIF one at a time (each with its own palette): memory stays flat however many
    frames there are (Pillow's save_all keeps every frame until the end)."""
    from PIL import GifImagePlugin, Image

    duration = round(1000 / fps)
    with open(path, "wb") as f:
        first = True
        for frame in frames:
            im = Image.fromarray(frame).quantize(
                256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
            )
            if first:
                header, _ = GifImagePlugin.getheader(im, None, {"loop": 0, "duration": duration})
                f.write(b"".join(header))
                first = False
            for chunk in GifImagePlugin.getdata(im, (0, 0), duration=duration, include_color_table=True):
                f.write(chunk)
        if first:
            raise StitchError("no frames to write")
        f.write(b";")  # GIF trailer
        f.flush()


def load_source(source: Path, width: int, height: int):
    """(Gaussians, keyframe cameras) of a run directory (refined.ply if present) or a scene file
    (keyframes: the stage trajectory at width x height)."""
    from splat.formats.io import load_scene

    source = Path(source)
    if source.is_dir():
        from engine.rundir import RunDirectory

        rd = RunDirectory(source)
        manifest = rd.read_manifest()  # validated: types, cameras, exports
        cameras = rd.read_cameras(manifest)
        for name in ("refined.ply", manifest.get("exports", {}).get("ply"), "scene.ply"):
            if isinstance(name, str) and name and (source / Path(name).name).is_file():
                return load_scene(source / Path(name).name), cameras
        _, tensors, _ = rd.load_checkpoint()
        if tensors is None:
            raise StitchError(f"{source} holds no scene yet; run stitch generate first")
        from splat.gaussians import Gaussians

        return Gaussians(tensors), cameras
    if not source.is_file():
        raise StitchError(f"{source} is neither a run directory nor a scene file")
    return load_scene(source), trajectory("stage", width, height)


def make_video(
    source: Path,
    output: Path,
    *,
    path: Path | None = None,
    frames: int = 120,
    fps: int = 30,
    width: int | None = None,
    scene_size: tuple[int, int] = (512, 384),
    progress: bool = True,
    device: str = "auto",  # auto: gsplat on CUDA when available, else the CPU rasterizer
) -> Path:
    """Render a fly-through of `source` (run directory or scene file) to `output`; returns the file."""
    from engine.device import check_gsplat, place_gaussians, resolve_device

    dev = resolve_device(device)
    check_gsplat(dev)
    if not 2 <= frames <= 10_000:
        raise StitchError(f"--frames must be in 2..10000, got {frames}")
    if not 1 <= fps <= 120:
        raise StitchError(f"--fps must be in 1..120, got {fps}")
    if width is not None and not 16 <= width <= 8192:
        raise StitchError(f"--width must be in 16..8192, got {width}")
    gaussians, keyframes = load_source(source, *scene_size)
    gaussians = place_gaussians(gaussians, dev)
    if path is not None:
        ref = keyframes[0] if keyframes else None
        w, h = (ref.width, ref.height) if ref is not None else scene_size
        keyframes = load_camera_path(path, w, h)
    elif Path(source).is_dir():
        keyframes = [keyframes[i] for i in tour_order(keyframes)]
    if not keyframes:
        raise StitchError("no cameras to fly through; give --path FILE.json")
    cameras = [even_size(c, width) for c in smooth_path(keyframes, frames)]
    return write_video(render_frames(gaussians, cameras, progress), output, fps)
