"""`.spz` frame and version on the command line, checked in the viewers' own converter: PlayCanvas
splat-transform 2.x reads `.spz` as y-up (RUB) and 3.x reads it raw, so a scene exported with
`--spz-axes rub` comes out upright in 2.x and the default `rdf` upright in 3.x.

The JavaScript tools: `npm install --prefix tests/js` (pinned in tests/js/package.json); skipped without them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.tools.export import export_scene, read_options
from splat.errors import StitchError
from splat.formats.io import load_scene, save_scene, scene_info
from splat.gaussians import Gaussians

REPO = Path(__file__).resolve().parents[1]
JS = REPO / "tests" / "js" / "node_modules"
FLIP = np.array([1.0, -1.0, -1.0])  # 180 degrees about x: RDF <-> RUB


def _tool(major: int) -> Path:
    cli = JS / f"splat-transform-{major}" / "bin" / "cli.mjs"
    if shutil.which("node") is None or not cli.is_file():
        pytest.skip("splat-transform not installed (npm install --prefix tests/js)")
    return cli


@pytest.fixture(scope="module")
def scene_ply(tmp_path_factory) -> Path:
    """An asymmetric scene: blobs at +x (red), +y = down (green), far +z (blue), random rotations."""
    rng = np.random.default_rng(0)
    centres = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, 3.0], [0.0, 0.0, 4.5], [0.0, 0.0, 3.0]])
    pts = np.repeat(centres, 40, axis=0) + rng.normal(0, 0.02, (160, 3))
    colours = np.repeat(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], float), 40, axis=0)
    g = Gaussians.from_points(pts, colours, sh_degree=0)
    with torch.no_grad():
        q = torch.tensor(rng.normal(size=(160, 4)), dtype=torch.float32)
        g.params["quats"].copy_(q / q.norm(dim=1, keepdim=True))
        g.params["scales"].copy_(torch.log(torch.tensor([0.05, 0.01, 0.02])).expand(160, 3))
    path = tmp_path_factory.mktemp("spz") / "scene.ply"
    save_scene(g, path)
    return path


def _rotations(g: Gaussians) -> np.ndarray:
    """Rotation matrices [N, 3, 3] of the Gaussians (sign of the quaternion does not matter)."""
    w, x, y, z = g.quats_normalised().detach().double().numpy().T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


def _through_splat_transform(major: int, spz: Path, out: Path) -> Gaussians:
    proc = subprocess.run(
        ["node", str(_tool(major)), "-w", str(spz), str(out)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return load_scene(out)


@pytest.mark.parametrize(
    ("major", "axes", "version", "upright"),
    [
        (2, "rub", 2, True),  # splat-transform 2.x (npm's default on Node 20) needs --spz-axes rub
        (2, "rdf", 2, False),  # ... and turns the default file upside down
        (2, "rub", 3, True),
        (3, "rdf", 2, True),  # 3.x reads raw, like stitch
        (3, "rdf", 3, True),
        (3, "rub", 2, False),
    ],
)
def test_splat_transform_reads_the_chosen_frame(scene_ply, tmp_path, major, axes, version, upright):
    spz = tmp_path / "scene.spz"
    export_scene(scene_ply, spz, spz_axes=axes, spz_version=version)
    assert scene_info(spz, axes)["spz_version"] == version
    original = load_scene(scene_ply)
    seen = _through_splat_transform(major, spz, tmp_path / "back.ply")
    means = seen.means.detach().double().numpy()
    ref = original.means.detach().double().numpy()
    if not upright:  # what the viewer shows is the scene turned 180 degrees about x
        ref = ref * FLIP
    np.testing.assert_allclose(means, ref, atol=2e-3)
    # Orientations follow the positions (a frame change turns rotations too, not just points).
    r_ref = _rotations(original)
    if not upright:
        r_ref = np.diag(FLIP) @ r_ref @ np.diag(FLIP)
    # (v2 stores x, y, z of the quaternion in 8 bits: w is imprecise when small; a wrong frame errs by ~1-2)
    error = np.abs(_rotations(seen) - r_ref).max(axis=(1, 2))
    assert np.percentile(error, 90) < 0.03 and error.max() < 0.25, np.sort(error)[-5:]
    np.testing.assert_allclose(seen.rgb().detach().numpy(), original.rgb().detach().numpy(), atol=0.02)


def test_info_says_the_frame_and_version_is_checked(scene_ply, tmp_path):
    spz = tmp_path / "scene.spz"
    export_scene(scene_ply, spz, spz_axes="rub", spz_version=3)
    info = scene_info(spz, "rub")
    assert info["spz_axes"].startswith("read as rub") and info["spz_version"] == 3
    # Read back in the frame it was written in: the same positions as the .ply (quantised).
    np.testing.assert_allclose(
        load_scene(spz, axes="rub").means.detach().numpy(), load_scene(scene_ply).means.detach().numpy(),
        atol=2e-3,
    )  # fmt: skip
    with pytest.raises(StitchError, match="version 3, not 2"):
        read_options(spz, "rdf", 2)
    with pytest.raises(StitchError, match="rdf or rub"):
        read_options(spz, "yup", 0)
    with pytest.raises(StitchError, match="2 or 3"):
        export_scene(scene_ply, tmp_path / "x.spz", spz_version=4)
    # The command line: stitch info names the frame.
    proc = subprocess.run(
        [sys.executable, "-c", "from cli import main; main()", "info", str(spz), "--spz-axes", "rub"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "spz_axes: read as rub (x right, y up, z back" in proc.stdout and "spz_version: 3" in proc.stdout


def test_render_and_view_read_the_spz_in_the_frame_given(scene_ply, tmp_path):
    """`stitch render/view --spz-axes rub` show a y-up .spz like the .ply it came from."""
    from engine.tools.render import render_scene_to_png
    from viewer.saved_scene import load_saved

    spz = tmp_path / "scene.spz"
    export_scene(scene_ply, spz, spz_axes="rub")
    ref = load_scene(scene_ply).means.detach().numpy()
    shown = load_saved(spz, spz_axes="rub").gaussians["means"].detach().numpy()
    np.testing.assert_allclose(shown, ref, atol=2e-3)
    assert np.abs(load_saved(spz).gaussians["means"].detach().numpy() - ref * FLIP).max() < 2e-3

    def render(scene: Path, name: str, options: dict) -> np.ndarray:
        (out,) = render_scene_to_png(scene, tmp_path / name, "single", 64, 48, load_options=options)
        return np.asarray(Image.open(out), np.float32) / 255

    from PIL import Image

    ply_img = render(scene_ply, "ply.png", {})
    right = render(spz, "rub.png", read_options(spz, "rub"))
    wrong = render(spz, "rdf.png", read_options(spz, "rdf"))
    assert ply_img.std() > 0.05  # the blobs are in view
    # Read in the wrong frame the scene lies behind the camera: an empty picture.
    assert np.abs(right - ply_img).mean() < 0.2 * np.abs(wrong - ply_img).mean(), (right.std(), wrong.std())
