"""Stitch here in the viewer (`stitch view RUN_DIR`): the panel grows the run where the browser looks, exactly
as `stitch extend` does, refuses a second request while one runs, and Undo restores the run byte-for-byte.
The browser test presses the real button in headless Chromium (skipped without it)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("viser")

from engine.config import GenerateConfig, OptimConfig
from engine.extend.state import cameras_from_options, read_run
from engine.run import run_generate
from splat.formats.camera_path import save_camera_path
from viewer.chromium import HeadlessChromium, find_chromium
from viewer.convert import camera_from_viser
from viewer.path_recorder import fly_to
from viewer.saved import serve_saved

MAX_SIDE, STEPS, PROMPT = 64, 3, "a street"
WHITE = 235  # viser's background; anything darker is drawn


@pytest.fixture(scope="module")
def finished(kyoto, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finished") / "run"
    config = GenerateConfig(photo=kyoto, prompt=PROMPT, max_side=MAX_SIDE, optim=OptimConfig(STEPS))
    run_generate(config, run_dir=root, quiet=True)
    return root


def copy_of(finished: Path, where: Path) -> Path:
    shutil.copytree(finished, where)
    return where


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def n_gaussians(root: Path) -> int:
    return json.loads((root / "manifest.json").read_text())["n_gaussians"]


def test_stitch_here_equals_stitch_extend_refuses_while_busy_and_undoes(finished, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    run = copy_of(finished, tmp_path / "viewer-run")
    before = files_of(run)
    camera = cameras_from_options(read_run(run), yaw=60.0)[0]
    viewer = serve_saved(run, port=0, block=False)
    try:
        panel = viewer.stitch_here
        assert panel is not None, "stitch view RUN_DIR must offer Stitch here"
        assert panel.request_stitch(None, camera)
        assert not panel.request_stitch(None, camera)  # a second press while stitching is refused
        assert panel.wait(300) and panel.last_error is None, panel.last_error
        assert "Added view 4" in panel.info.content
        assert viewer.wait_idle(60)
        # The browser's scene is the run's new scene, with the new camera.
        assert viewer.scene.total_splats == n_gaussians(run) > n_gaussians(finished)
        assert len(viewer.scene.cameras) == 4
        # `stitch extend` with the same camera (and the run's seed) makes the very same scene.
        cli_run = copy_of(finished, tmp_path / "cli-run")
        save_camera_path([camera], tmp_path / "here.json")
        result = CliRunner().invoke(
            app, ["extend", str(cli_run), "--path", str(tmp_path / "here.json"), "-q"]
        )
        assert result.exit_code == 0, result.output + repr(result.exception)
        assert (cli_run / "scene.ply").read_bytes() == (run / "scene.ply").read_bytes()
        # A camera facing away: refused with one line in the panel, nothing written.
        stitched = files_of(run)
        assert panel.request_stitch(None, cameras_from_options(read_run(run), yaw=180.0)[0])
        assert panel.wait(120) and "faces away" in (panel.last_error or "")
        assert "Not stitched" in panel.info.content and files_of(run) == stitched
        # Undo: the run and the browser's scene are as before the press.
        assert panel.request_undo()
        assert panel.wait(120) and panel.last_error is None, panel.last_error
        assert files_of(run) == before
        assert viewer.wait_idle(60)
        assert len(viewer.scene.cameras) == 3 and viewer.scene.total_splats == n_gaussians(finished)
    finally:
        viewer.stop()


# --- the real button in a real browser ------------------------------------------------------------------

CLICK = """(() => {
  const b = [...document.querySelectorAll('button')].find(e => e.textContent.trim() === %r);
  if (!b || b.disabled) return false;
  b.click();
  return true;
})()"""


def canvas(shot: np.ndarray) -> np.ndarray:
    """The 3D view left of the side panel, below the software-WebGL notice, right of the axes gizmo."""
    h, w = shot.shape[:2]
    return shot[160 : h - 5, 70 : int(w * 0.66)]


def drawn_fraction(shot: np.ndarray) -> float:
    return float((canvas(shot).min(axis=2) < WHITE).mean())


def settled(browser: HeadlessChromium, min_drawn: float = 0.0, timeout: float = 60.0) -> np.ndarray:
    """A screenshot once two in a row agree and `min_drawn` of the canvas is drawn (splats are sorted in a
    worker and fade in)."""
    deadline = time.monotonic() + timeout
    previous = browser.screenshot()
    while True:
        time.sleep(0.5)
        shot = browser.screenshot()
        still = np.abs(shot.astype(np.int16) - previous.astype(np.int16)).mean() < 0.3
        if still and drawn_fraction(shot) >= min_drawn:
            return shot
        if time.monotonic() > deadline:
            return shot
        previous = shot


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def look_through(viewer, client, camera, width: int, height: int, tries: int = 4) -> None:
    """Put the browser's camera on `camera` and wait until the browser reports that pose back (a page that
    is still starting up may reset its camera once, so the move is repeated until it sticks)."""

    def echoed(before) -> bool:
        state = client.camera._state
        if state is before:
            return False
        got = camera_from_viser(state.wxyz, state.position, state.fov, width, height)
        return np.allclose(got.world_to_camera, camera.world_to_camera, atol=1e-3)

    if echoed(None):
        return
    for _ in range(tries):
        before = client.camera._state
        fly_to(client, camera, max(viewer.scene.frustum_scale * 4.0, 1e-3))
        deadline = time.monotonic() + 8.0
        while time.monotonic() < deadline:
            if echoed(before):
                return
            time.sleep(0.1)
    raise AssertionError("the browser never reported the new camera")


@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None, reason="chromium not installed (apt-get install chromium)")
def test_pressing_stitch_here_in_the_browser_fills_the_view_and_undo_restores(finished, tmp_path):
    run = copy_of(finished, tmp_path / "run")
    before_files = files_of(run)
    state = read_run(run)
    width, height = state.size
    camera = cameras_from_options(state, yaw=60.0)[0]
    viewer = serve_saved(run, port=0, block=False)
    browser = None
    try:
        assert viewer.wait_idle(60)
        browser = HeadlessChromium(viewer.url, 1024, 640)
        wait_for(lambda: viewer.server.get_clients(), 30, "the page to connect")
        client = next(iter(viewer.server.get_clients().values()))
        viewer.set_cameras_visible(False)  # frusta and their images would cover the splats
        settled(browser, 0.1)  # the page has drawn its first scene (it resets its camera once on start-up)
        look_through(viewer, client, camera, width, height)
        before = settled(browser)
        look_through(viewer, client, camera, width, height)  # still there (a no-op when it is)
        Image.fromarray(before).save(tmp_path / "before.png")
        # Yawed 60 degrees the camera sees the stage's edge: most of its view is still empty.
        assert drawn_fraction(before) < 0.6, f"expected a hole (see {tmp_path / 'before.png'})"

        wait_for(lambda: browser.evaluate(CLICK % "Stitch here"), 30, "the Stitch here button")
        panel = viewer.stitch_here
        wait_for(lambda: len(read_run(run).cameras) == 4 and not panel.busy, 300, "the view to be stitched")
        assert panel.last_error is None, panel.last_error
        assert viewer.wait_idle(60)
        after = settled(browser)
        Image.fromarray(after).save(tmp_path / "after.png")
        assert drawn_fraction(after) > 0.95, f"the view still has a hole (see {tmp_path / 'after.png'})"
        assert "Added view 4" in browser.evaluate("document.body.innerText")
        # The run directory has the new view and its camera: the browser's pose at the press.
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["n_gaussians"] > n_gaussians(finished)
        np.testing.assert_allclose(
            manifest["cameras"][3]["world_to_camera"], camera.world_to_camera, atol=1e-3
        )
        assert (run / "views" / "view_003.png").is_file() and manifest["extensions"][0]["view"] == 3

        wait_for(lambda: browser.evaluate(CLICK % "Undo"), 30, "the Undo button")
        wait_for(lambda: len(read_run(run).cameras) == 3 and not panel.busy, 120, "Undo")
        assert files_of(run) == before_files
        assert viewer.wait_idle(60)
        undone = settled(browser)
        assert drawn_fraction(undone) < 0.6  # the hole is back: the browser shows the restored scene
    finally:
        if browser is not None:
            browser.close()
        viewer.stop()


@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None, reason="chromium not installed (apt-get install chromium)")
def test_a_second_browser_sees_the_view_the_first_one_stitched(finished, tmp_path):
    """Two people on one run: B looks where A is about to stitch; after A presses Stitch here, B's view fills
    in and B's panel says so, without B doing anything (one scene state, sent to every client)."""
    run = copy_of(finished, tmp_path / "run")
    state = read_run(run)
    width, height = state.size
    camera = cameras_from_options(state, yaw=60.0)[0]
    viewer = serve_saved(run, port=0, block=False)
    browsers: list[HeadlessChromium] = []
    try:
        assert viewer.wait_idle(60)
        viewer.set_cameras_visible(False)
        clients = {}
        for name in ("a", "b"):
            known = set(viewer.server.get_clients())
            browsers.append(HeadlessChromium(viewer.url, 1024, 640))
            wait_for(lambda k=known: set(viewer.server.get_clients()) - k, 30, f"browser {name} to connect")
            (new_id,) = set(viewer.server.get_clients()) - known
            clients[name] = viewer.server.get_clients()[new_id]
            settled(browsers[-1], 0.1)
        a, b = browsers
        look_through(viewer, clients["a"], camera, width, height)
        look_through(viewer, clients["b"], camera, width, height)
        before_b = settled(b)
        assert drawn_fraction(before_b) < 0.6  # B sees the hole too
        splats_before = viewer.scene.total_splats

        wait_for(lambda: a.evaluate(CLICK % "Stitch here"), 30, "the Stitch here button in browser A")
        panel = viewer.stitch_here
        wait_for(lambda: len(read_run(run).cameras) == 4 and not panel.busy, 300, "the view to be stitched")
        assert panel.last_error is None, panel.last_error
        assert viewer.wait_idle(60)
        after_b = settled(b)
        Image.fromarray(np.concatenate([before_b, after_b], 1)).save(tmp_path / "browser_b.png")
        assert viewer.scene.total_splats > splats_before
        assert drawn_fraction(after_b) > 0.95, (
            f"browser B still shows the hole (see {tmp_path / 'browser_b.png'})"
        )
        assert "Added view 4" in b.evaluate("document.body.innerText")  # B's panel follows A's press
    finally:
        for browser in browsers:
            browser.close()
        viewer.stop()


def test_generate_view_offers_stitch_here_once_the_run_is_finished(finished, tmp_path):
    """`generate --view` passes its run directory: while the run is generating a press is refused clearly."""
    from viewer import start_live_viewer

    run = copy_of(finished, tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps(dict(manifest, status="running")))
    viewer = start_live_viewer(port=0, run_dir=run)
    try:
        assert viewer.host == "127.0.0.1"  # still this machine only unless --host is given
        camera = cameras_from_options(read_run(finished), yaw=60.0)[0]
        assert viewer.stitch_here.request_stitch(None, camera)
        assert viewer.stitch_here.wait(60)
        assert "not finished yet" in (viewer.stitch_here.last_error or "")
        assert len(json.loads((run / "manifest.json").read_text())["cameras"]) == 3
    finally:
        viewer.stop()


def test_generate_view_hands_its_loaded_models_to_stitch_here(kyoto, tmp_path):
    from viewer import live_viewer_at

    started = []

    def start(run_root):
        started.append(live_viewer_at(port=0)(run_root))
        return started[-1]

    root = tmp_path / "run"
    config = GenerateConfig(photo=kyoto, mode="single", max_side=MAX_SIDE, optim=OptimConfig(STEPS))
    run_generate(config, run_dir=root, live_viewer=start, quiet=True)
    assert started[0].config.path_dir == root / "paths"  # browser-saved paths stay inside the run
    panel = started[0].stitch_here
    assert panel is not None and panel._backends is not None  # no second copy loaded at the first press
    result = panel.stitch(cameras_from_options(read_run(root), yaw=40.0)[0])
    assert result.added == [1] and result.n_after > result.n_before
