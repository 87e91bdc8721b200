"""Server-side render of the full scene, pushed to each browser as its background image.

For scenes above the splat budget the browser only gets a sample; this renders *all* Gaussians from each
client's camera with the project renderer (`splat.render.render_camera`: gsplat on CUDA, the CPU tile
rasterizer otherwise, at a low resolution there) on its own thread. Only the newest camera of each client
is rendered: moving the mouse queues nothing.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping

import numpy as np
import torch

from viewer.path_recorder import client_camera

log = logging.getLogger("stitch.viewer")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def render_rgb(gaussians, camera) -> np.ndarray:
    """Render one Camera -> [H, W, 3] uint8, over white like the viewer's own background."""
    from splat.render import render_camera

    with torch.no_grad():
        out = render_camera(gaussians, camera, background=torch.ones(3, device=gaussians.device))
    return out.rgb[0].clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).cpu().numpy()


class BackgroundRenderer:
    def __init__(self, width: int | None = None, device: str | None = None) -> None:
        self.device = device or default_device()
        self.width = int(width or (960 if self.device.startswith("cuda") else 256))
        self.enabled = False
        self._gaussians = None  # splat.gaussians.Gaussians on self.device
        self._tensors: Mapping | None = None
        self._pending: dict[int, object] = {}  # client id -> client handle, newest request only
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stitch-viewer-render", daemon=True)
        self._thread.start()
        self.renders = 0

    def set_gaussians(self, tensors: Mapping) -> None:
        with self._lock:
            self._tensors = tensors
            self._gaussians = None  # rebuilt lazily on the render thread

    def request(self, client) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._pending[client.client_id] = client
        self._wake.set()

    def clear(self, client) -> None:
        with self._lock:
            self._pending.pop(client.client_id, None)
        try:
            client.scene.set_background_image(None)
        except Exception as exc:  # the client may have gone
            log.debug("clearing background failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            while not self._stop.is_set():
                with self._lock:
                    if not self._pending or self._tensors is None or not self.enabled:
                        break
                    _, client = self._pending.popitem()
                    if self._gaussians is None:
                        self._gaussians = _to_gaussians(self._tensors, self.device)
                    gaussians = self._gaussians
                try:
                    self._render_for(client, gaussians)
                except Exception as exc:  # a closed browser or a render error never ends the thread
                    log.warning("server-side render failed: %s", exc)

    def _render_for(self, client, gaussians) -> None:
        height = render_height(self.width, client.camera.aspect if client.camera.image_height else 4 / 3)
        width = self.width
        camera = client_camera(client, width, height)
        image = render_rgb(gaussians, camera)
        if self.enabled:
            client.scene.set_background_image(image, format="jpeg", jpeg_quality=85)
            self.renders += 1


MAX_ASPECT = 4.0  # the client reports its viewport; a 1x1000 one must not make a 1:1000 render


def render_height(width: int, aspect: float) -> int:
    """Height of the server render: the client's aspect (width / height) clamped to 1/4..4, so a hostile
    or odd viewport can never ask for more than width x 4*width pixels."""
    try:
        aspect = float(aspect)
    except (TypeError, ValueError):
        aspect = 4 / 3
    if not math.isfinite(aspect) or aspect <= 0:
        aspect = 4 / 3
    aspect = min(max(aspect, 1 / MAX_ASPECT), MAX_ASPECT)
    return max(8, round(width / aspect))


def _to_gaussians(tensors: Mapping, device: str):
    from splat.gaussians import Gaussians

    params = {k: torch.as_tensor(v).detach().to(device, torch.float32) for k, v in tensors.items()}
    return Gaussians(params)
