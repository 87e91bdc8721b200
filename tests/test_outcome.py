"""What a person gets: brightness, seams, repetition and detail of outpainted views, and whole runs scored by
the outcome harness on every real photo in stage and 360 mode."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.backends.outpaint import push_pull_fill
from engine.backends.outpaint_classical import ClassicalOutpainter, MirrorOutpainter
from engine.images import luminance
from engine.outcome import (
    LUMINANCE_RANGE,
    detail_ratio,
    evaluate_views,
    photo_seam_baseline,
    repetition_score,
    seam_colour_step,
)

PHOTOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "photos"
KYOTO = PHOTOS / "photo-1667788000333-4e36f948de9a.jpeg"
ALL_PHOTOS = sorted(p for p in PHOTOS.glob("*.jpeg")) if PHOTOS.is_dir() else []
needs_photos = pytest.mark.skipif(not ALL_PHOTOS, reason="../shared/data/photos not present")


def _photo(path: Path, width: int = 192) -> np.ndarray:
    img = cv2.imread(str(path))[..., ::-1].astype(np.float32) / 255.0
    h, w = img.shape[:2]
    return cv2.resize(img, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)


def _right_hole(shape: tuple[int, int], frac: float) -> np.ndarray:
    hole = np.zeros(shape, bool)
    hole[:, int(shape[1] * (1 - frac)) :] = True
    return hole


# --- the root cause of the fading 360 scene --------------------------------------------------------------


def test_push_pull_keeps_a_grey_image_grey_in_a_large_hole():
    """Regression: the coarsest pyramid level kept unknown pixels at 0 and pulled black into the hole
    (0.5 grey with the right 37 % missing came back as 0.13)."""
    img = np.full((256, 384, 3), 0.5, np.float32)
    hole = _right_hole((256, 384), 0.37)
    known = np.where(hole[..., None], 0.0, img).astype(np.float32)
    assert push_pull_fill(known, ~hole)[hole].mean() == pytest.approx(0.5, abs=1e-3)
    for outpainter in (ClassicalOutpainter(), MirrorOutpainter()):
        filled = outpainter(known, hole, "", 0)
        assert filled[hole].mean() == pytest.approx(0.5, abs=0.01), outpainter.name


@needs_photos
def test_exemplar_outpainter_keeps_brightness_texture_and_continues_the_scene():
    """On the Kyoto street with 45 % of the frame missing (a 25 degree turn): the new outpainter keeps the
    photo's brightness and fine texture, and repeats the known pixels far less than mirroring does."""
    img = _photo(KYOTO)
    hole = _right_hole(img.shape[:2], 0.45)
    known = np.where(hole[..., None], 0.0, img).astype(np.float32)
    photo_lum = luminance(img[~hole]).mean()
    photo_detail = float(np.std(img))  # only used as a non-zero scale below
    assert photo_detail > 0
    from engine.outcome import _fine_texture

    base_detail = float(_fine_texture(img)[0].std())
    scores = {}
    for op in (ClassicalOutpainter(), MirrorOutpainter()):
        out = op(known, hole, "", 0)
        assert np.array_equal(out[~hole], img[~hole]), "known pixels must come back unchanged"
        lum = luminance(out[hole]).mean() / photo_lum
        scores[op.name] = (lum, repetition_score(out, hole), detail_ratio(out, hole, base_detail))
    lum, rep, detail = scores["classical"]
    assert 0.85 <= lum <= 1.15
    assert detail > 0.5, f"the fill is a blur ({detail:.2f}x the photo's fine texture)"
    assert rep < scores["mirror"][1] - 0.1, scores
    assert scores["mirror"][1] > 0.6  # the harness does see the reflection


# --- the harness notices what a person notices -------------------------------------------------------------


class _V:
    def __init__(self, image, depth, new):
        self.image, self.depth, self.new_mask, self.camera = image, depth, new, None


@needs_photos
def test_harness_flags_dark_views_seams_blur_and_wrong_depth():
    img = _photo(KYOTO, 160)
    h, w = img.shape[:2]
    depth = np.full((h, w), 3.0, np.float32)
    hole = _right_hole((h, w), 0.45)
    good = ClassicalOutpainter()(np.where(hole[..., None], 0, img).astype(np.float32), hole, "", 0)
    dark = np.where(hole[..., None], good * 0.5, good).astype(np.float32)
    blurred = np.where(hole[..., None], cv2.GaussianBlur(good, (0, 0), 6), good).astype(np.float32)
    far = np.where(hole, 30.0, depth).astype(np.float32)
    full = np.ones((h, w), bool)
    report = evaluate_views([_V(img, depth, full), _V(good, depth, hole)], between=False)
    assert report["verdict"] == "ok", report["problems"]
    row = report["views"][1]
    assert LUMINANCE_RANGE[0] <= row["luminance_ratio"] <= LUMINANCE_RANGE[1]
    report = evaluate_views(
        [_V(img, depth, full), _V(dark, depth, hole), _V(blurred, depth, hole), _V(good, far, hole)],
        between=False,
    )
    text = "; ".join(report["problems"])
    assert "view 1 darker" in text and "view 1 seam visible" in text
    assert "view 2 is a blur" in text
    assert "view 3 depth step at the seam" in text and "view 3 depth implausible" in text


def test_seam_unit_is_a_natural_photo_column():
    """A seam whose step equals the photo's own column step scores ~1 (the unit is stated in the README)."""
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.random((96, 128, 3)).astype(np.float32), (0, 0), 1.5)
    new = _right_hole((96, 128), 0.5)
    assert seam_colour_step(img, new) / photo_seam_baseline(img) == pytest.approx(1.0, abs=0.35)
    stepped = img.copy()
    stepped[new] += 0.2
    assert seam_colour_step(stepped, new) / photo_seam_baseline(img) > 5


# --- whole runs on every real photo ---------------------------------------------------------------------


@needs_photos
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["stage", "360"])
@pytest.mark.parametrize("photo", ALL_PHOTOS, ids=lambda p: p.name[6:19])
def test_every_photo_keeps_its_brightness_in_every_view(tmp_path, photo, mode):
    """The first build faded to black in 360 mode (view means 0.38 -> 0.000). Every view's added pixels now
    stay within 0.8-1.25x the photo's luminance, seams stay below the harness bound, nothing is a blur."""
    from engine.config import GenerateConfig, OptimConfig
    from engine.run import run_generate

    config = GenerateConfig(photo=photo, mode=mode, max_side=96, optim=OptimConfig(steps_per_view=8))
    run_generate(config, run_dir=tmp_path / "run", quiet=True)
    outcome = json.loads((tmp_path / "run" / "manifest.json").read_text())["outcome"]
    rows = [r for r in outcome["views"] if r["luminance_ratio"] is not None]
    assert len(rows) == (2 if mode == "stage" else 12)
    for r in rows:
        assert LUMINANCE_RANGE[0] <= r["luminance_ratio"] <= LUMINANCE_RANGE[1], r
        # Known limit: late views of a 360 chain copy from renders of renders and lose fine texture
        # (detail 0.06-0.4 of the photo's at 128 px, README); the stage sides keep it.
        if mode == "stage":
            assert r["detail"] is None or r["detail"] > 0.15, r
    lum_problems = [p for p in outcome["problems"] if "darker" in p or "brighter" in p]
    assert not lum_problems


@needs_photos
def test_stitch_check_prints_the_table_and_saves_it(tmp_path):
    """`stitch check RUN` on a finished run: a row per view, the verdict line, the report in the manifest;
    on a folder that is not a run: one line, exit code 2."""
    from reliability_harness import run_cli

    from engine.config import GenerateConfig, OptimConfig
    from engine.run import run_generate

    config = GenerateConfig(photo=KYOTO, mode="stage", max_side=64, optim=OptimConfig(steps_per_view=2))
    run = tmp_path / "run"
    run_generate(config, run_dir=run, quiet=True)
    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["outcome"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    res = run_cli(["check", str(run)])
    out = res.stdout.decode()
    assert res.returncode == 0, res.stderr.decode()
    assert out.count("\n") >= 5 and "verdict:" in out and "holes between views" in out
    lines = [ln.split() for ln in out.splitlines() if ln.split() and ln.split()[0] in ("1", "2")]
    assert len(lines) == 2 and all(0.8 <= float(ln[2]) <= 1.25 for ln in lines)  # luminance column
    assert json.loads((run / "manifest.json").read_text())["outcome"]["verdict"]
    res = run_cli(["check", str(tmp_path)])
    err = res.stderr.decode().strip()
    assert res.returncode == 2 and "Traceback" not in err and len(err.splitlines()) == 1
