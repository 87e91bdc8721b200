"""Headless Chromium driven over the DevTools protocol: load the viewer page, wait, take screenshots.

Used by the viewer's tests and to make the README screenshot. Chromium renders the viser client with
software WebGL (SwiftShader); the flags are the ones known to work on machines without a GPU or network.
Install on Debian/Ubuntu with `apt-get install -y chromium`.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--mute-audio",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)
# WebGL without a GPU: ANGLE's SwiftShader backend (newer Chromium needs the opt-in). The web splat viewers
# need it; viser's own page does not.
SWIFTSHADER_WEBGL = ("--use-angle=swiftshader", "--enable-unsafe-swiftshader")


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class HeadlessChromium:
    """One headless browser with one page at `url`; `screenshot()` returns the page as RGB [H, W, 3]."""

    def __init__(
        self,
        url: str,
        width: int = 1024,
        height: int = 640,
        timeout: float = 30.0,
        extra_flags: Sequence[str] = (),
    ) -> None:
        exe = find_chromium()
        if exe is None:
            raise RuntimeError("chromium not found; install it with: apt-get install -y chromium")
        self._profile = tempfile.mkdtemp(prefix="stitch-chromium-")
        self.proc = subprocess.Popen(
            [
                exe,
                *FLAGS,
                *extra_flags,
                f"--user-data-dir={self._profile}",
                "--remote-debugging-port=0",
                f"--window-size={width},{height}",
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so close() ends its helpers too
        )
        self._ws = None
        self._next_id = 0
        try:
            self._ws = self._connect(timeout)
        except BaseException:
            self.close()
            raise

    def _connect(self, timeout: float):
        from websockets.sync.client import connect

        port_file = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with code {self.proc.returncode}")
            with contextlib.suppress(OSError, ValueError, IndexError):
                port = int(port_file.read_text().split()[0])
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
                if pages:
                    return connect(pages[0]["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024)
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not open its DevTools port in time")
            time.sleep(0.1)

    def call(self, method: str, **params) -> dict:
        """Send one DevTools command and return its result (events in between are skipped)."""
        self._next_id += 1
        msg_id = self._next_id
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._ws.recv(timeout=60))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str, await_promise: bool = False):
        """The expression's value; await_promise: wait for a Promise it returns and give its value."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=await_promise
        )
        return result.get("result", {}).get("value")

    def screenshot_png(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def screenshot(self) -> np.ndarray:
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(self.screenshot_png())).convert("RGB"))

    def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                self._ws.close()
            self._ws = None
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)  # the group this object started, nothing else
            try:
                self.proc.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> HeadlessChromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
