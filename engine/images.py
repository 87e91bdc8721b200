"""Loading the input photo: validation, orientation, colour mode, and sizing for the models.

Also the pixel helpers the engine shares: uint8 conversion, luminance, PNG writing, depth colouring.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from splat.errors import InputImageError

MIN_SIDE = 32  # below this no view has enough pixels to stitch
# Pillow refuses images above 2 x MAX_IMAGE_PIXELS (and warns above it; we treat the warning as an error)
# while reading the header, before any pixel is allocated: the largest photo we decode is ~89 megapixels.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
SIZE_MULTIPLE = 8  # diffusion models need sides divisible by 8
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # Rec. 601 luma weights of R, G, B


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def target_size(width: int, height: int, max_side: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """Scale so the longest side is at most max_side, then round both sides down to a multiple."""
    scale = min(1.0, max_side / max(width, height))
    w = max(multiple, int(width * scale) // multiple * multiple)
    h = max(multiple, int(height * scale) // multiple * multiple)
    return w, h


def load_photo(path: str | Path, max_side: int) -> np.ndarray:
    """Read a photo -> float32 [H, W, 3] in [0, 1], EXIF-rotated, flattened to RGB, resized for the models.

    The header is read first, so an enormous image is refused (or shrunk while decoding) without allocating
    its full size."""
    path = Path(path)
    if not path.exists():
        raise InputImageError(f"photo {path} does not exist; check the path")
    if path.is_dir():
        raise InputImageError(f"{path} is a directory; give an image file")
    if not path.is_file():  # a FIFO or device would block (or never end) the read
        raise InputImageError(f"photo {path} is not a regular file; give an image file")
    if max_side < MIN_SIDE:
        raise InputImageError(f"--max-side {max_side} is too small; use at least {MIN_SIDE}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise InputImageError(
                    f"photo {path} is {width}x{height}, more than {MAX_PIXELS / 1e6:.0f} megapixels; "
                    "downscale it first"
                )
            if min(width, height) < MIN_SIDE:
                raise InputImageError(
                    f"photo {path} is {width}x{height}; it needs at least {MIN_SIDE} px on each side"
                )
            tw, th = target_size(width, height, max_side)
            if min(tw, th) < MIN_SIDE:  # a 4000x32 strip would become 384x8 views
                raise InputImageError(
                    f"photo {path} is {width}x{height}, too elongated: at --max-side {max_side} it becomes "
                    f"{tw}x{th}, under {MIN_SIDE} px; crop it closer to 4:3 (or raise --max-side)"
                )
            # JPEG can decode straight at a reduced scale: big photos never exist at full size in memory.
            img.draft("RGB", (max_side, max_side))
            ImageOps.exif_transpose(img, in_place=True)  # in place: no second full-size copy
            img.load()
    except InputImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputImageError(
            f"photo {path} has more than {MAX_PIXELS / 1e6:.0f} megapixels (the largest this tool decodes); "
            "downscale it first"
        ) from exc
    except UnidentifiedImageError as exc:
        raise InputImageError(
            f"{path} is not a readable image ({exc.__class__.__name__}); give a JPEG/PNG/WebP"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputImageError(
            f"photo {path} is damaged or truncated ({exc}); re-export or re-download it"
        ) from exc
    return _to_rgb_float(img, max_side)


def _reduce_early(img: Image.Image, tw: int, th: int) -> Image.Image:
    """Box-shrink a big decoded image by an integer factor (staying >= 2x the target size) before any mode
    conversion: a near-89-MP RGBA or 16-bit photo otherwise makes several full-size float/RGBA copies
    (1.2-1.6 GB peak) on its way to a 384 px view."""
    factor = int(min(img.width / tw, img.height / th) // 2)
    if factor < 2:
        return img
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode in ("I;16", "I;16B", "I;16L"):
        img = img.convert("I")
    elif img.mode not in ("L", "LA", "RGB", "RGBA", "I", "F", "CMYK", "YCbCr"):
        img = img.convert("RGBA" if "A" in img.mode else "RGB")
    if img.mode in ("CMYK", "YCbCr"):
        img = img.convert("RGB")
    return img.reduce(factor)


def _to_rgb_float(img: Image.Image, max_side: int) -> np.ndarray:
    w, h = target_size(img.width, img.height, max_side)  # of the decoded size, as before reducing
    img = _reduce_early(img, w, h)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        arr = arr / max(1.0, float(arr.max()))
        img = Image.fromarray((arr * 255).astype(np.uint8), "L")
    elif img.mode == "F":  # float TIFF: 0..1 (or any range) -> 8 bits; convert("RGB") would clip to 0/1
        arr = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(arr.max()) if arr.size else 0.0
        arr = np.clip(arr / (1.0 if top <= 1.0 else top), 0.0, 1.0)
        img = Image.fromarray((arr * 255 + 0.5).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))  # transparent areas become white
        img = Image.alpha_composite(background, img)
    if img.mode != "RGB":  # (convert to the same mode would copy the full-size image)
        img = img.convert("RGB")  # greyscale, CMYK, palette, YCbCr -> RGB
    if (w, h) != img.size:
        # Centre-crop to the target aspect before resizing, so sides are exact multiples without distortion.
        scale = max(w / img.width, h / img.height)
        crop_w, crop_h = round(w / scale), round(h / scale)
        left, top = (img.width - crop_w) // 2, (img.height - crop_h) // 2
        img = img.resize((w, h), Image.Resampling.LANCZOS, box=(left, top, left + crop_w, top + crop_h))
    return np.asarray(img, dtype=np.float32) / 255.0


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float [H, W, C] in [0, 1] -> uint8."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def luminance(image: np.ndarray) -> np.ndarray:  # [..., 3] -> [...]
    """Rec. 601 luma of RGB pixels (extra channels after the third are ignored)."""
    return image[..., :3] @ LUMA


def save_png(image: np.ndarray, path: Path) -> None:
    """Write float [H, W, 3] / [H, W] in [0, 1] or uint8 as PNG (atomically)."""
    arr = image if image.dtype == np.uint8 else to_uint8(image)
    _atomic_png(Image.fromarray(arr), path)


def depth_to_png16(depth: np.ndarray, path: Path) -> None:
    """Depth [H, W] metres -> 16-bit PNG in millimetres (0 = invalid), written atomically."""
    mm = np.clip(np.nan_to_num(depth) * 1000.0, 0, 65535).astype(np.uint16)
    _atomic_png(Image.fromarray(mm), path)


def _atomic_png(img: Image.Image, path: Path) -> None:
    """PNG to a temp file beside `path`, then rename; on any error (a full disk) the temp file is removed
    and `path` keeps its old content."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        img.save(tmp, format="PNG")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None and exc.errno is not None:  # PIL's write errors name no file
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def colorize_depth(depth: np.ndarray) -> np.ndarray:
    """Depth [H, W] -> uint8 [H, W, 3] visualisation (near = bright), for previews."""
    valid = depth > 0
    out = np.zeros((*depth.shape, 3), dtype=np.uint8)
    if not valid.any():
        return out
    inv = np.where(valid, 1.0 / np.maximum(depth, 1e-6), 0.0)
    lo, hi = np.percentile(inv[valid], [2, 98])
    t = np.clip((inv - lo) / max(hi - lo, 1e-9), 0, 1)
    # A simple warm ramp: dark blue (far) -> orange -> light yellow (near).
    r = np.clip(1.5 * t, 0, 1)
    g = np.clip(1.5 * t - 0.4, 0, 1)
    b = np.clip(0.5 - t, 0, 1) + np.clip(2 * t - 1.6, 0, 1)
    out[...] = (np.stack([r, g, b], -1) * 255).astype(np.uint8)
    out[~valid] = 0
    return out
