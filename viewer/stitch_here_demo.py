"""Make the README's Stitch-here screenshots: a finished stage run, the browser turned 60 degrees to where
the scene ends, then the same view after pressing Stitch here in the page.

    python -m viewer.stitch_here_demo docs/stitch_here_before.png docs/stitch_here_after.png \
        [--photo PHOTO] [--max-side 192] [--yaw 60]

Runs the offline pipeline into a temporary run directory, serves it as `stitch view RUN_DIR` does, and
presses the real button in headless Chromium (apt-get install -y chromium). Prints the Gaussian counts and
the seconds the press took.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import tempfile
import time
from pathlib import Path

import numpy as np

from viewer.screenshot import DEFAULT_PHOTO, HIDE_NOTICES, settled_screenshot

CLICK = """(() => {
  const b = [...document.querySelectorAll('button')].find(e => e.textContent.trim() === %r);
  if (!b || b.disabled) return false;
  b.click();
  return true;
})()"""


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def _look_through(viewer, client, camera, tries: int = 4) -> None:
    """Move the browser onto `camera` until the browser itself reports that pose (a starting page resets its
    camera once)."""
    from viewer.convert import camera_from_viser
    from viewer.path_recorder import fly_to

    def there(before) -> bool:
        state = client.camera._state
        if state is before:
            return False
        got = camera_from_viser(state.wxyz, state.position, state.fov, camera.width, camera.height)
        return np.allclose(got.world_to_camera, camera.world_to_camera, atol=1e-3)

    for _ in range(tries):
        if there(None):
            return
        before = client.camera._state
        fly_to(client, camera, max(viewer.scene.frustum_scale * 4.0, 1e-3))
        deadline = time.monotonic() + 8.0
        while time.monotonic() < deadline and not there(before):
            time.sleep(0.1)
    if not there(None):
        raise SystemExit("the browser never took the camera")


def _save(png: bytes, path: Path) -> None:
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"{path}: {img.width}x{img.height}, {path.stat().st_size // 1024} KB")


def main(argv: list[str] | None = None) -> None:
    from engine.config import PRESETS, OptimConfig
    from engine.extend.state import cameras_from_options, read_run
    from engine.run import run_generate
    from viewer.chromium import HeadlessChromium
    from viewer.saved import serve_saved

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    parser.add_argument("--max-side", type=int, default=192)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--yaw", type=float, default=60.0)
    parser.add_argument("--size", default="1200x960", help="browser window, WIDTHxHEIGHT")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))

    with tempfile.TemporaryDirectory(prefix="stitch-here-") as tmp:
        run = Path(tmp) / "run"
        config = dataclasses.replace(
            PRESETS["offline"], photo=args.photo, max_side=args.max_side, optim=OptimConfig(args.steps)
        )
        run_generate(config, run_dir=run, quiet=True)
        camera = cameras_from_options(read_run(run), yaw=args.yaw)[0]
        viewer = serve_saved(run, port=0, block=False)
        try:
            viewer.wait_idle(60)
            with HeadlessChromium(viewer.url, width, height) as browser:
                _wait(lambda: viewer.server.get_clients(), 30, "the page to connect")
                client = next(iter(viewer.server.get_clients().values()))
                viewer.set_cameras_visible(False)
                settled_screenshot(browser)
                _look_through(viewer, client, camera)
                browser.evaluate(HIDE_NOTICES)
                _save(settled_screenshot(browser), args.before)
                _look_through(viewer, client, camera)
                n_before = read_run(run).manifest["n_gaussians"]
                t0 = time.perf_counter()
                _wait(lambda: browser.evaluate(CLICK % "Stitch here"), 30, "the Stitch here button")
                panel = viewer.stitch_here
                _wait(lambda: len(read_run(run).cameras) == 4 and not panel.busy, 600, "the new view")
                seconds = time.perf_counter() - t0
                if panel.last_error:
                    raise SystemExit(f"Stitch here failed: {panel.last_error}")
                viewer.wait_idle(60)
                time.sleep(1.0)
                browser.evaluate(HIDE_NOTICES)
                _save(settled_screenshot(browser), args.after)
                n_after = read_run(run).manifest["n_gaussians"]
                counts = f"{n_before:,} -> {n_after:,} Gaussians"
                print(f"Stitch here at yaw {args.yaw:g}: {counts} in {seconds:.1f} s")
        finally:
            viewer.stop()


if __name__ == "__main__":
    main()
