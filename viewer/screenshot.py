"""Make the README's viewer screenshot: the live viewer part-way through a real (offline) generation.

    python -m viewer.screenshot docs/viewer.png [--photo PHOTO] [--max-side 256] [--mode stage]

Runs the offline pipeline on the photo with the live viewer attached, holds the run half-way through the
last view's optimisation (this script's own subscriber waits; the viewer never does), photographs the page
with headless Chromium, then lets the run finish. Needs chromium (apt-get install -y chromium).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import threading
import time
from pathlib import Path

import numpy as np

from engine.events import PipelineEvent

DEFAULT_PHOTO = (
    Path(__file__).resolve().parents[2] / "shared/data/photos/photo-1667788000333-4e36f948de9a.jpeg"
)
HIDE_NOTICES = """
for (const el of document.querySelectorAll('div')) {
  if (el.className && String(el.className).includes('Notification-root')) el.remove();
}
"""


def settled_screenshot(browser, timeout: float = 60.0) -> bytes:
    """PNG of the page once two screenshots in a row agree (splats are sorted and faded in)."""
    from PIL import Image

    deadline = time.monotonic() + timeout
    previous = None
    while True:
        png = browser.screenshot_png()
        shot = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)
        if (
            previous is not None
            and np.abs(shot - previous).mean() < 0.5
            and (shot.min(axis=2) < 235).mean() > 0.2
        ):
            return png
        if time.monotonic() > deadline:
            return png
        previous = shot
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> None:
    from PIL import Image

    from engine.backends.loading import backends_for_config
    from engine.config import PRESETS, OptimConfig
    from engine.images import load_photo
    from engine.pipeline import StitchPipeline
    from engine.run import cameras_for
    from viewer.chromium import HeadlessChromium
    from viewer.server import LiveViewer, ViewerConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    parser.add_argument("--max-side", type=int, default=256)
    parser.add_argument("--mode", default="stage")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", default="1200x720", help="browser window, WIDTHxHEIGHT")
    args = parser.parse_args(argv)

    config = dataclasses.replace(
        PRESETS["offline"], photo=args.photo, mode=args.mode, max_side=args.max_side,
        optim=OptimConfig(steps_per_view=args.steps),
    )  # fmt: skip
    image = load_photo(args.photo, args.max_side)
    cameras = cameras_for(config, image.shape[1], image.shape[0])
    outpainter, completer = backends_for_config(config)
    pipeline = StitchPipeline(outpainter, completer, config.fusion, config.optim, sh_degree=config.sh_degree)
    width, height = (int(v) for v in args.size.split("x"))

    viewer = LiveViewer(ViewerConfig(port=0))
    hold, done = threading.Event(), threading.Event()
    last = len(cameras) - 1

    def pause_mid_run(event: PipelineEvent) -> None:
        if (
            event.kind == "optimize_step"
            and event.view_index == last
            and event.step == event.total_steps // 2
        ):
            hold.set()
            done.wait(180)

    worker = threading.Thread(
        target=lambda: pipeline(image, cameras, callbacks=[viewer.callback, pause_mid_run]), daemon=True
    )
    try:
        with HeadlessChromium(viewer.url, width, height) as browser:
            worker.start()
            if not hold.wait(600):
                raise SystemExit("the run never reached the last view")
            viewer.wait_idle(60)
            time.sleep(1.0)
            browser.evaluate(HIDE_NOTICES)
            png = settled_screenshot(browser)
        done.set()
        worker.join(600)
    finally:
        done.set()
        viewer.stop()
    img = Image.open(io.BytesIO(png)).convert("RGB")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(args.output, optimize=True)
    print(f"{args.output}: {img.width}x{img.height}, {args.output.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
