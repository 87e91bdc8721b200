"""User-supplied depth for the first view (`--depth-file`): a 16-bit PNG in mm or a .npy array in metres."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from splat.errors import StitchError

MAX_DEPTH_FILE_PIXELS = 100_000_000  # parsers bound allocations


def _check_png_size(path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            w, h = img.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise StitchError(f"depth file {path} is not a readable PNG ({exc.__class__.__name__})") from exc
    if w * h > MAX_DEPTH_FILE_PIXELS:
        raise StitchError(f"depth file {path} is too large ({w}x{h}); downscale it")


def load_depth_file(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Read a user depth map for the first view -> [H, W] float32 metres, 0 = unknown.

    size = (height, width) of the image. Accepted: a 16-bit PNG in millimetres or a .npy array in metres;
    0 (or negative) marks unknown pixels, NaN/Inf are refused. A map of another size is resized to the
    image with nearest-neighbour sampling (keeps unknown pixels and edges crisp); its aspect ratio must
    match the image's within 2 %."""
    path = Path(path)
    H, W = (int(size[0]), int(size[1]))
    if not path.is_file():
        raise StitchError(f"depth file {path} does not exist; check --depth-file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise StitchError(
                f"depth file {path} is not a plain .npy array ({exc}); save it with numpy.save"
            ) from exc
        if arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]):
            arr = arr.reshape(arr.shape[1:] if arr.shape[0] == 1 else arr.shape[:2])
        if arr.ndim != 2 or arr.dtype.kind not in "fiu":
            raise StitchError(
                f"depth file {path} must hold a 2D numeric [H, W] array (metres), got {arr.dtype} {arr.shape}"
            )
        if arr.size > MAX_DEPTH_FILE_PIXELS:
            raise StitchError(f"depth file {path} is too large ({arr.shape}); downscale it")
        depth = np.array(arr, dtype=np.float32)
        if not np.isfinite(depth).all():
            raise StitchError(f"depth file {path} contains NaN or Inf; use 0 for unknown pixels")
    elif suffix == ".png":
        _check_png_size(path)  # from the header: a tiny file can claim 20000x20000 (GBs once decoded)
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise StitchError(f"depth file {path} is not a readable PNG")
        if raw.dtype != np.uint16 or raw.ndim != 2:
            raise StitchError(
                f"depth file {path} is {raw.dtype} {raw.shape}; give a single-channel 16-bit PNG in mm"
            )
        depth = raw.astype(np.float32) / 1000.0
    else:
        raise StitchError(
            f"depth file {path} must be a 16-bit PNG (mm) or a .npy array (m), not {suffix or 'no suffix'}"
        )
    depth[depth < 0] = 0.0
    if not (depth > 0).any():
        raise StitchError(
            f"depth file {path} has no positive depth; it must hold depth in metres (.npy) or mm (.png)"
        )
    h, w = depth.shape
    if abs((w / h) / (W / H) - 1.0) > 0.02:
        raise StitchError(
            f"depth file {path} is {w}x{h} but the image is {W}x{H} (another aspect ratio); crop it to match"
        )
    if (h, w) != (H, W):
        depth = cv2.resize(depth, (W, H), interpolation=cv2.INTER_NEAREST)
    return depth
