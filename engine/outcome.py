"""The outcome harness: what a person looking at a generated scene would notice, measured per view.

For every view after the photo, on the pixels the view added (its `new` mask):
    luminance      mean luminance of the added pixels / the photo's (a fading scene drifts below 1)
    colour shift   distance of the added pixels' mean chromaticity from the photo's
    seam colour    median colour step across the old/new boundary, divided by the same operator's value on
                   the photo (a typical natural edge: ~1 means the seam is as visible as any photo column)
    seam depth     median relative depth step across the boundary (a gap or a wall at the seam)
    repetition     highest normalised correlation of the added pixels' fine texture with a translated or
                   mirrored copy of the known pixels (mirroring or tiling -> close to 1; new texture -> low)
    detail         fine-texture energy (std of the high-pass) of the added pixels / the photo's (a blur -> ~0)
    depth ratio    median depth of the added pixels / the photo's (a room collapsing to a wall or a sky)
From cameras halfway between consecutive views: holes (alpha < 0.5) and see-through (mean 1 - alpha).

`evaluate_run` works on a run directory (`stitch check RUN_DIR`); `evaluate_views` on the pipeline's output.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np
from scipy import ndimage

from engine.images import luminance

# Bounds of the verdict (see README "Outcome harness" for how they were chosen).
LUMINANCE_RANGE = (0.8, 1.25)
SEAM_COLOUR_MAX = 3.0  # x the photo's own median step across a column
SEAM_DEPTH_MAX = 0.10  # median relative depth step across the seam
DEPTH_RATIO_RANGE = (1 / 3, 3.0)
HOLES_MAX = 0.05
REPETITION_MAX = 0.6
DETAIL_MIN = 0.15


@dataclass
class ViewOutcome:
    view: int
    new_fraction: float
    luminance_ratio: float | None
    colour_shift: float | None
    seam_colour: float | None
    seam_depth: float | None
    repetition: float | None
    detail: float | None
    depth_ratio: float | None


def _chromaticity(pixels: np.ndarray) -> np.ndarray:  # [N, 3] -> [3]
    mean = pixels.mean(axis=0)
    return mean / max(float(mean.sum()), 1e-6)


def _boundary_steps(values: np.ndarray, new: np.ndarray, band: int = 3) -> np.ndarray | None:
    """|mean over `band` px on the new side - mean on the old side| at each boundary pixel -> [B, ...]."""
    old = ~new
    if new.all() or old.all():
        return None
    boundary = new & ndimage.binary_dilation(old)
    if boundary.sum() < 8:
        return None
    kernel = np.ones((2 * band + 1, 2 * band + 1), np.float32)
    vals = values if values.ndim == 3 else values[..., None]
    means = []
    for side in (new, old):
        w = cv2.filter2D(side.astype(np.float32), -1, kernel, borderType=cv2.BORDER_CONSTANT)
        s = np.stack(
            [
                cv2.filter2D(vals[..., c] * side, -1, kernel, borderType=cv2.BORDER_CONSTANT)
                for c in range(vals.shape[2])
            ],
            axis=-1,
        )
        means.append(s / np.maximum(w, 1e-6)[..., None])
    return np.abs(means[0] - means[1])[boundary]


def seam_colour_step(image: np.ndarray, new: np.ndarray) -> float | None:
    steps = _boundary_steps(image.astype(np.float32), new)
    return None if steps is None else float(np.median(steps.mean(axis=1)))


def photo_seam_baseline(photo: np.ndarray) -> float:
    """The seam operator on the photo across vertical lines at 1/3, 1/2 and 2/3 of the width: how large a
    step a natural column of the scene shows (the unit of `seam colour`)."""
    h, w = photo.shape[:2]
    values = []
    for frac in (1 / 3, 1 / 2, 2 / 3):
        new = np.zeros((h, w), bool)
        new[:, int(w * frac) :] = True
        values.append(seam_colour_step(photo, new) or 0.0)
    return max(float(np.median(values)), 1e-3)


def seam_depth_step(depth: np.ndarray, new: np.ndarray) -> float | None:
    steps = _boundary_steps(np.log(np.maximum(depth, 1e-6)).astype(np.float32), new)
    return None if steps is None else float(np.expm1(np.median(steps)))


def _fine_texture(image: np.ndarray, width: int = 128) -> tuple[np.ndarray, float]:
    """Grey high-pass at `width` px wide -> ([h, w], scale factor)."""
    h, w = image.shape[:2]
    s = min(1.0, width / w)
    small = cv2.resize(
        luminance(image), (max(8, round(w * s)), max(8, round(h * s))), interpolation=cv2.INTER_AREA
    )
    return small - cv2.GaussianBlur(small, (0, 0), 2.0), s


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 1e-9 else 0.0


def repetition_score(image: np.ndarray, new: np.ndarray, min_overlap: float = 0.25) -> float | None:
    """Max normalised correlation between the added pixels' high-pass texture and a translated
    (|shift| >= 4 px at 128 px wide) or mirrored (about any column or row) copy of the known pixels."""
    tex, _ = _fine_texture(image)
    h, w = tex.shape
    nm = cv2.resize(new.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    known = ~nm
    n_new = int(nm.sum())
    if n_new < 64 or known.sum() < 64:
        return None
    need = max(64, int(min_overlap * n_new))
    best = 0.0
    ys, xs = np.nonzero(nm)
    # Translations (dy small: a turning camera keeps rows; dx any).
    for dy in range(-h // 8, h // 8 + 1, 2):
        for dx in range(-w + 1, w, 1):
            if abs(dx) < 4 and abs(dy) < 4:
                continue
            sy, sx = ys + dy, xs + dx
            ok = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
            ok[ok] &= known[sy[ok], sx[ok]]
            if ok.sum() < need:
                continue
            best = max(best, _ncc(tex[ys[ok], xs[ok]], tex[sy[ok], sx[ok]]))
    # Mirrors about each column and each row.
    for mirror_columns, size in ((True, w), (False, h)):
        for c2 in range(1, 2 * size - 2):  # mirror line at c2 / 2
            m = c2 - (xs if mirror_columns else ys)
            ok = (m >= 0) & (m < size)
            m = np.clip(m, 0, size - 1)
            my, mx = (ys, m) if mirror_columns else (m, xs)
            ok[ok] &= known[my[ok], mx[ok]]
            if ok.sum() < need:
                continue
            best = max(best, _ncc(tex[ys[ok], xs[ok]], tex[my[ok], mx[ok]]))
    return round(best, 4)


def detail_ratio(image: np.ndarray, new: np.ndarray, photo_detail: float) -> float | None:
    tex, _ = _fine_texture(image)
    nm = cv2.resize(new.astype(np.uint8), (tex.shape[1], tex.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    nm = ndimage.binary_erosion(nm, iterations=2)  # the seam itself is not texture
    if nm.sum() < 16:
        return None
    return float(tex[nm].std()) / max(photo_detail, 1e-6)


def evaluate_views(views: Sequence, gaussians=None, between: bool = True) -> dict:
    """Per-view outcome rows + in-between coverage + a verdict.

    `views` have .image, .depth, .new_mask, .camera; view 0 is the photo."""
    photo = views[0].image
    photo_lum = float(luminance(photo).mean())
    photo_chroma = _chromaticity(photo.reshape(-1, 3))
    photo_depth = float(np.median(views[0].depth))
    baseline = photo_seam_baseline(photo)
    photo_detail = float(_fine_texture(photo)[0].std())
    rows = []
    for k, v in enumerate(views):
        new = np.asarray(v.new_mask, bool)
        if k == 0 or not new.any():
            rows.append(ViewOutcome(k, float(new.mean()), None, None, None, None, None, None, None))
            continue
        added = v.image[new]
        step_c = seam_colour_step(v.image, new)
        rows.append(
            ViewOutcome(
                view=k,
                new_fraction=round(float(new.mean()), 4),
                luminance_ratio=round(float(luminance(added).mean()) / max(photo_lum, 1e-6), 4),
                colour_shift=round(float(np.abs(_chromaticity(added) - photo_chroma).sum()), 4),
                seam_colour=None if step_c is None else round(step_c / baseline, 3),
                seam_depth=_round(seam_depth_step(v.depth, new)),
                repetition=repetition_score(v.image, new),
                detail=_round(detail_ratio(v.image, new, photo_detail), 3),
                depth_ratio=round(float(np.median(v.depth[new])) / max(photo_depth, 1e-6), 4),
            )
        )
    holes, see_through = [], []
    if between and gaussians is not None and len(gaussians) > 0:
        holes, see_through = _between_views(gaussians, [v.camera for v in views])
    report = {
        "views": [asdict(r) for r in rows],
        "photo_seam_baseline": round(baseline, 5),
        "holes_between_views": holes,
        "see_through_between_views": see_through,
    }
    report["problems"] = problems(report)
    report["verdict"] = "ok" if not report["problems"] else "check: " + "; ".join(report["problems"])
    return report


def _round(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def _between_views(gaussians, cameras: Sequence) -> tuple[list[float], list[float]]:
    import torch

    from engine.quality import interpolate_cameras
    from splat.render import render_camera

    holes, see = [], []
    with torch.no_grad():
        for a, b in itertools.pairwise(cameras):
            cam = interpolate_cameras(a, b, 0.5)
            scale = min(1.0, 192 / cam.width)
            cam = cam.scaled(max(8, round(cam.width * scale)), max(8, round(cam.height * scale)))
            alpha = render_camera(gaussians, cam).alpha[0, ..., 0].cpu().numpy()
            holes.append(round(float((alpha < 0.5).mean()), 4))
            see.append(round(float((1.0 - alpha).mean()), 4))
    return holes, see


def problems(report: dict) -> list[str]:
    """Human-readable list of what breaks the bounds (empty = the scene passes)."""
    out = []
    lo, hi = LUMINANCE_RANGE
    for r in report["views"]:
        k = r["view"]
        lum = r["luminance_ratio"]
        if lum is not None and not lo <= lum <= hi:
            out.append(f"view {k} {'darker' if lum < lo else 'brighter'} than the photo ({lum:.2f}x)")
        if r["seam_colour"] is not None and r["seam_colour"] > SEAM_COLOUR_MAX:
            out.append(f"view {k} seam visible (colour step {r['seam_colour']:.1f}x a photo column)")
        if r["seam_depth"] is not None and r["seam_depth"] > SEAM_DEPTH_MAX:
            out.append(f"view {k} depth step at the seam ({100 * r['seam_depth']:.0f} %)")
        d = r["depth_ratio"]
        if d is not None and not DEPTH_RATIO_RANGE[0] <= d <= DEPTH_RATIO_RANGE[1]:
            out.append(f"view {k} depth implausible ({d:.2f}x the photo's median)")
        if r["detail"] is not None and r["detail"] < DETAIL_MIN:
            out.append(f"view {k} is a blur ({r['detail']:.2f}x the photo's fine texture)")
        if r["repetition"] is not None and r["repetition"] > REPETITION_MAX:
            out.append(f"view {k} repeats the known texture (score {r['repetition']:.2f})")
    for i, h in enumerate(report.get("holes_between_views", [])):
        if h > HOLES_MAX:
            out.append(f"holes between views {i} and {i + 1} ({100 * h:.0f} % of pixels)")
    return out


def format_table(report: dict) -> str:
    head = (
        f"{'view':>4} {'new':>5} {'lum':>5} {'chroma':>6} {'seam':>5} {'seamZ':>6} {'repeat':>6} "
        f"{'detail':>6} {'depth':>6}"
    )
    lines = [head]

    def f(x, fmt):
        return "-" if x is None else format(x, fmt)

    for r in report["views"]:
        lines.append(
            f"{r['view']:>4} {f(r['new_fraction'], '5.2f')} {f(r['luminance_ratio'], '5.2f')} "
            f"{f(r['colour_shift'], '6.3f')} {f(r['seam_colour'], '5.2f')} {f(r['seam_depth'], '6.3f')} "
            f"{f(r['repetition'], '6.2f')} {f(r['detail'], '6.2f')} {f(r['depth_ratio'], '6.2f')}"
        )
    if report.get("holes_between_views"):
        lines.append("holes between views: " + " ".join(f"{h:.3f}" for h in report["holes_between_views"]))
        lines.append(
            "see-through between views: " + " ".join(f"{h:.3f}" for h in report["see_through_between_views"])
        )
    lines.append(f"verdict: {report['verdict']}")
    return "\n".join(lines)


def evaluate_run(root) -> dict:
    """The harness on a finished (or partly finished) run directory: its saved views and latest checkpoint."""
    from pathlib import Path

    from engine.pipeline import ViewRecord
    from engine.rundir import RunDirectory
    from splat.cameras import Camera
    from splat.errors import StitchError
    from splat.gaussians import Gaussians

    rd = RunDirectory(Path(root))
    manifest = rd.read_manifest()
    try:
        cameras = [Camera.from_dict(c) for c in manifest["cameras"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise StitchError(
            f"{rd.manifest_path} has no readable cameras ({exc}); is this a stitch run?"
        ) from exc
    n_done, tensors, _ = rd.load_checkpoint()
    if n_done == 0 or tensors is None:
        raise StitchError(f"{rd.root} has no finished view yet; run or --resume it first")

    views = []
    for k in range(n_done):
        image, depth, new = rd.load_view(k)
        views.append(ViewRecord(cameras[k], image, depth, new))
    return evaluate_views(views, Gaussians(dict(tensors)))


def check_run(root, save: bool = True) -> str:
    """`stitch check`: evaluate a run directory, optionally store the report in its manifest, -> the table."""
    from pathlib import Path

    from engine.rundir import RunDirectory, atomic_write_json

    report = evaluate_run(root)
    if save:
        rd = RunDirectory(Path(root))
        manifest = rd.read_manifest()
        manifest["outcome"] = report
        atomic_write_json(rd.manifest_path, manifest)
    return format_table(report)
