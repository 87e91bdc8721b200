"""The viewer page in a real browser (headless Chromium, software WebGL): the scene is drawn with the photo's
colours, the panel shows progress, clicking through to a generation camera shows that view, keyframes
recorded from the browser's camera save as a camera path, and the server-side render reaches the page.

Skips without Chromium (Debian/Ubuntu: apt-get install -y chromium)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("viser")

from engine.events import PipelineEvent
from engine.trajectory import trajectory
from splat.cameras import unproject_depth
from splat.formats.camera_path import load_camera_path
from splat.gaussians import Gaussians
from viewer.chromium import HeadlessChromium, find_chromium
from viewer.convert import camera_from_viser
from viewer.server import LiveViewer, ViewerConfig

pytestmark = pytest.mark.skipif(
    find_chromium() is None, reason="chromium not installed (apt-get install chromium)"
)

W, H = 96, 64
WHITE = 235  # viser's background is white; anything darker is drawn content


@pytest.fixture(scope="module")
def photo(kyoto) -> np.ndarray:
    with Image.open(kyoto) as img:
        return np.asarray(img.convert("RGB").resize((W, H), Image.Resampling.BOX))


@pytest.fixture(scope="module")
def other_photo(photos) -> np.ndarray:
    with Image.open(photos[0]) as img:  # the canyon: a very different palette from the Kyoto street
        return np.asarray(img.convert("RGB").resize((W, H), Image.Resampling.BOX))


@pytest.fixture(scope="module")
def live(photo, tmp_path_factory):
    """A viewer mid-generation (view 1 of 3 done), with headless Chromium showing it."""
    cams = trajectory("stage", W, H)
    v = np.arange(H, dtype=np.float64)[:, None] + 0.5
    depth = np.broadcast_to(2.0 + 2.0 * (1.0 - v / H), (H, W)).copy()  # a slanted plane, top farther away
    g = Gaussians.from_points(unproject_depth(cams[0], depth), photo.reshape(-1, 3) / 255.0, sh_degree=0)
    viewer = LiveViewer(ViewerConfig(port=0, path_dir=tmp_path_factory.mktemp("paths")))
    for event in (
        PipelineEvent("run_started", -1, 3, cameras=cams),
        PipelineEvent("view_started", 0, 3, cameras=cams),
        PipelineEvent("view_finished", 0, 3, cameras=cams, image=photo, gaussians=g.tensors()),
        PipelineEvent("view_started", 1, 3, cameras=cams),
        PipelineEvent("optimize_step", 1, 3, cameras=cams, step=12, total_steps=30, loss=0.0421),
    ):
        viewer.callback(event)
    assert viewer.wait_idle(30)
    browser = HeadlessChromium(viewer.url, 1024, 640)
    try:
        deadline = time.monotonic() + 30
        while not viewer.server.get_clients() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert viewer.server.get_clients(), "the page never connected to the viewer"
        client = next(iter(viewer.server.get_clients().values()))
        yield viewer, browser, client, cams, g
    finally:
        browser.close()
        viewer.stop()


def canvas(shot: np.ndarray) -> np.ndarray:
    """The 3D view left of the side panel, below the software-WebGL notice, right of the axes gizmo."""
    h, w = shot.shape[:2]
    return shot[160 : h - 5, 70 : int(w * 0.66)]


def drawn_fraction(shot: np.ndarray) -> float:
    return float((canvas(shot).min(axis=2) < WHITE).mean())


def wait_for_drawing(browser: HeadlessChromium, min_fraction: float, timeout: float = 40.0) -> np.ndarray:
    """Screenshots until the canvas is drawn (`min_fraction` of it) and settled: splats are sorted in a web
    worker and fade in, so wait until two screenshots in a row agree."""
    deadline = time.monotonic() + timeout
    previous = browser.screenshot()
    while True:
        time.sleep(0.3)
        shot = browser.screenshot()
        change = np.abs(shot.astype(np.int16) - previous.astype(np.int16)).mean()
        if (drawn_fraction(shot) >= min_fraction and change < 0.5) or time.monotonic() > deadline:
            return shot
        previous = shot


def colour_histogram(pixels: np.ndarray, levels: int = 4) -> np.ndarray:
    q = pixels.reshape(-1, 3).astype(np.int64) * levels // 256
    h = np.bincount((q[:, 0] * levels + q[:, 1]) * levels + q[:, 2], minlength=levels**3).astype(np.float64)
    return h / max(h.sum(), 1.0)


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.minimum(colour_histogram(a), colour_histogram(b)).sum())


def photo_under_view(photo: np.ndarray, shot: np.ndarray) -> np.ndarray:
    """Where the photo lands in the canvas when the client looks through camera 0: full height, centred."""
    h, w = shot.shape[:2]
    pw = round(h * W / H)
    big = np.asarray(Image.fromarray(photo).resize((pw, h), Image.Resampling.BILINEAR))
    x0 = (w - pw) // 2
    out = np.full_like(shot, 255)
    lo, hi = max(0, x0), min(w, x0 + pw)
    out[:, lo:hi] = big[:, lo - x0 : hi - x0]
    return out


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.mean(axis=2).ravel(), b.mean(axis=2).ravel())[0, 1])


def move_and_wait_for_echo(viewer: LiveViewer, client, index: int, timeout: float = 15.0):
    """Fly the client to camera `index`, then wait for the *browser's* report of its new camera.

    viser updates its copy of the client camera as soon as we set it; the browser's own report arrives as
    a new state object (`_state`), so wait for one of those that matches the target pose."""
    before = client.camera._state
    viewer.fly_to_view(index, client)
    target = viewer.scene.cameras[index].world_to_camera
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        state = client.camera._state
        if state is not before:
            got = camera_from_viser(state.wxyz, state.position, state.fov, W, H)
            if np.allclose(got.world_to_camera, target, atol=1e-3):
                return got
        time.sleep(0.05)
    return got


def test_page_shows_the_scene_with_its_colours_and_the_scene_tree(live, photo, tmp_path):
    viewer, browser, _, _, g = live
    shot = wait_for_drawing(browser, 0.2)
    Image.fromarray(shot).save(tmp_path / "overview.png")
    assert drawn_fraction(shot) > 0.2, f"canvas is blank (see {tmp_path / 'overview.png'})"
    drawn = canvas(shot).reshape(-1, 3)
    drawn = drawn[drawn.min(axis=1) < WHITE]
    assert overlap(drawn, photo) > 0.4  # the street's browns and greys, not just frustum lines
    # The side panel reports the run mid-way and the scene size.
    text = browser.evaluate("document.body.innerText")
    assert "View 2 of 3: optimising step 12/30" in text
    assert f"{len(g):,} Gaussians" in text
    # The scene tree the browser lists: splat chunks and one frustum per generation camera.
    names = set(viewer.server.scene._handle_from_node_name)
    assert "/scene/splats/chunk_000" in names
    assert {"/cameras/view_000", "/cameras/view_001", "/cameras/view_002"} <= names


def test_flying_to_a_generation_camera_shows_that_view(live, photo, other_photo, tmp_path):
    viewer, browser, client, cams, _ = live
    viewer.set_cameras_visible(False)  # the camera's own frustum image would cover the splats
    try:
        got = move_and_wait_for_echo(viewer, client, 0)
        assert got is not None, "the browser never reported its camera after the move"
        np.testing.assert_allclose(got.world_to_camera, cams[0].world_to_camera, atol=1e-3)
        assert client.camera.fov == pytest.approx(2 * math.atan(H / 2 / cams[0].K[1, 1]), abs=1e-4)
        shot = wait_for_drawing(browser, 0.8)
        Image.fromarray(shot).save(tmp_path / "view0.png")
        expected = photo_under_view(photo, shot)
        # Looking through camera 0 the splats reproduce the photo: same layout (not mirrored or flipped) ...
        assert correlation(canvas(shot), canvas(expected)) > 0.6
        assert correlation(canvas(shot), canvas(expected)[:, ::-1]) < 0.4
        # ... and the photo's colours, clearly closer than another photo's.
        seen = canvas(shot).reshape(-1, 3)
        assert overlap(seen, photo) > 0.6 and overlap(seen, photo) > overlap(seen, other_photo) + 0.2
    finally:
        viewer.set_cameras_visible(True)


def test_keyframes_from_the_browser_camera_save_as_a_camera_path(live):
    viewer, _, client, cams, _ = live
    for index in (1, 2):
        assert move_and_wait_for_echo(viewer, client, index) is not None
        viewer.recorder.add_keyframe(client)  # from the browser's reported camera
    path = viewer.recorder.save("walk.json")
    assert path.parent == viewer.config.path_dir
    loaded = load_camera_path(path, W, H)
    assert len(loaded) == 2
    for got, want in zip(loaded, cams[1:], strict=True):
        np.testing.assert_allclose(got.world_to_camera, want.world_to_camera, atol=1e-3)
        assert got.focal == pytest.approx(want.focal, rel=1e-3)
    assert "/path/key_001" in viewer.server.scene._handle_from_node_name
    viewer.recorder.clear()
    assert "/path/key_000" not in viewer.server.scene._handle_from_node_name


def test_server_render_reaches_the_page(live, photo, tmp_path):
    viewer, browser, client, _, _ = live
    viewer.set_cameras_visible(False)
    try:
        move_and_wait_for_echo(viewer, client, 0)
        viewer.set_server_render(True)
        deadline = time.monotonic() + 60
        while viewer.background.renders == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert viewer.background.renders > 0
        assert not viewer.scene.splat_handles[0].visible  # the browser's own splats step aside
        shot = wait_for_drawing(browser, 0.8)
        Image.fromarray(shot).save(tmp_path / "server_render.png")
        assert correlation(canvas(shot), canvas(photo_under_view(photo, shot))) > 0.5
    finally:
        viewer.set_server_render(False)
        viewer.set_cameras_visible(True)
    assert viewer.scene.splat_handles[0].visible
