"""The live viewer: a viser server that shows a scene growing, fed by pipeline events.

    viewer = start_live_viewer("127.0.0.1", 8080)
    pipeline(..., callbacks=[viewer.callback])     # returns at once; never blocks generation
    viewer.stop()                                  # frees the port

`callback` only records the newest state under a lock and wakes the viewer's own worker thread; the worker
draws it (Gaussians in chunks, camera frusta with their images, the status panel). Intermediate states that
were superseded before the worker got to them are dropped. Everything the worker and the GUI callbacks do
is wrapped so that a closed browser, several browsers, or a failing draw never reach the pipeline.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.events import PipelineEvent
from splat.cameras import Camera
from splat.errors import StitchError
from viewer.background import BackgroundRenderer, default_device
from viewer.convert import overview_pose, preview_splats
from viewer.netguard import check_bind, exposure_note, origin_guard
from viewer.panel import Progress, StatusPanel, progress_of, splat_stats
from viewer.path_recorder import PathRecorder, fly_to
from viewer.scene import SceneSync

log = logging.getLogger("stitch.viewer")


@dataclass(frozen=True)
class ViewerConfig:
    host: str = "127.0.0.1"  # "0.0.0.0" exposes the viewer to the network
    port: int = 8080  # 0: any free port; a busy port moves to the next free one (see LiveViewer.port)
    max_splats: int = 300_000  # splats sent to the browser per update; larger scenes are subsampled
    chunk_size: int = 50_000  # splats per viser node
    thumbnail_width: int = 256  # view images on the frusta
    render_width: int | None = None  # server-side render width (default 960 on CUDA, 256 on CPU)
    min_interval: float = 0.1  # seconds between panel redraws (coalesces optimize_step floods)
    path_dir: Path = Path("camera_paths")  # a folder of its own for "Save path" (never a run's files)
    label: str = "stitch"
    panel_title: str = "Generation"
    run_dir: Path | None = None  # a run directory: adds the "Stitch here" panel (viewer/stitch_here.py)


@dataclass
class _Pending:
    """What the pipeline reported since the worker last looked (newest wins)."""

    cameras: list[Camera] | None = None
    images: dict[int, np.ndarray] = field(default_factory=dict)
    gaussians: Mapping | None = None
    progress: Progress | None = None
    current: int | None = None

    def empty(self) -> bool:
        return (
            self.cameras is None
            and not self.images
            and self.gaussians is None
            and self.progress is None
            and self.current is None
        )


class LiveViewer:
    def __init__(self, config: ViewerConfig | None = None) -> None:
        import viser  # optional dependency: only the viewer needs it

        self.config = config or ViewerConfig()
        cfg = self.config
        if cfg.max_splats <= 0 or cfg.chunk_size <= 0:
            raise StitchError("viewer max_splats and chunk_size must be positive")
        check_bind(cfg.host, cfg.port)  # bad port/host: one line now, not a hang in viser's thread
        try:
            # viser prints a banner on stdout; keep stdout for the CLI's own output.
            with contextlib.redirect_stdout(sys.stderr), origin_guard(cfg.host):
                self.server = viser.ViserServer(host=cfg.host, port=cfg.port, label=cfg.label, verbose=False)
        except OSError as exc:
            where = f"{cfg.host}:{cfg.port}"
            raise StitchError(f"viewer cannot start on {where} ({exc}); try another --host/--port") from exc
        note = exposure_note(cfg.host, self.server.get_port())
        if note:
            print(note, file=sys.stderr, flush=True)
        # Browsers' speculative pre-connections fail the websocket handshake and websockets logs each one
        # as an ERROR with a traceback; they are harmless, so keep them out of the user's terminal.
        ws_log = logging.getLogger("websockets.server")
        if ws_log.level == logging.NOTSET:
            ws_log.setLevel(logging.CRITICAL)
        self.server.scene.set_up_direction("-y")  # OpenCV world: y points down
        self.server.initial_camera.position = (0.0, -0.3, -1.5)
        self.server.initial_camera.look_at = (0.0, 0.0, 2.0)
        self.server.initial_camera.up = (0.0, -1.0, 0.0)

        self._lock = threading.Lock()  # guards _pending
        self._scene_lock = threading.RLock()  # SceneSync is used by the worker and by GUI callbacks
        self._pending = _Pending()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._idle = threading.Condition()
        self._received = 0  # events taken in by callback()
        self._applied = 0  # events whose state the worker has drawn
        self.errors = 0  # draw failures swallowed by the worker (logged)
        self._framed = False  # browsers moved to the overview at the scene's real depth

        self.panel = StatusPanel(self.server, cfg.panel_title)
        self.scene = SceneSync(self.server, cfg.max_splats, cfg.chunk_size, cfg.thumbnail_width)
        self.scene.on_camera_click = self._fly_to_view
        self.background = BackgroundRenderer(cfg.render_width)
        self._add_display_controls()
        self.recorder = PathRecorder(self.server, cfg.path_dir)
        self.stitch_here = None
        if cfg.run_dir is not None:
            from viewer.stitch_here import StitchHerePanel

            self.stitch_here = StitchHerePanel(self, cfg.run_dir)
        self.server.on_client_connect(self._on_connect)

        self._worker = threading.Thread(target=self._run, name="stitch-viewer", daemon=True)
        self._worker.start()

    # --- public API -----------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self.server.get_port()

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "", "::") else self.config.host
        return f"http://{host}:{self.port}"

    def callback(self, event: PipelineEvent) -> None:
        """Subscriber for the pipeline: records the event and returns at once; never raises."""
        try:
            image = None if event.image is None else np.array(event.image, copy=True)
            progress = progress_of(event)
            with self._lock:
                p = self._pending
                if event.cameras:
                    p.cameras = list(event.cameras)
                if image is not None and event.view_index >= 0:
                    p.images[event.view_index] = image
                if event.gaussians is not None:
                    p.gaussians = event.gaussians  # a detached snapshot; newer ones replace older ones
                p.progress = progress
                if event.kind == "view_started":
                    p.current = event.view_index
                elif event.kind in ("view_finished", "run_finished"):
                    p.current = -1
                self._received += 1
            self._wake.set()
        except Exception as exc:  # the pipeline must never see a viewer error
            log.warning("viewer dropped a %s event: %s", getattr(event, "kind", "?"), exc)

    def show(
        self,
        gaussians: Mapping | None = None,
        cameras: Sequence[Camera] | None = None,
        images: Mapping[int, np.ndarray] | None = None,
        status: str | None = None,
    ) -> None:
        """Show a finished scene (stitch view): Gaussians' tensors, cameras and their view images."""
        with self._lock:
            p = self._pending
            if cameras:
                p.cameras = list(cameras)
            if images:
                p.images.update(images)
            if gaussians is not None:
                p.gaussians = gaussians
            if status is not None:
                p.progress = Progress(f"**{status}**", 1.0, finished=True)
            p.current = -1
            self._received += 1
        self._wake.set()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until everything received so far is drawn (for tests and `stitch view`)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._applied < self._received:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.1))
        return True

    def stop(self) -> None:
        """Stop the worker and the server; the port is free when this returns. Safe to call twice."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._wake.set()
        self._worker.join(timeout=10.0)
        self.background.stop()
        with contextlib.redirect_stdout(sys.stderr):
            self.server.stop()

    def __enter__(self) -> LiveViewer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- worker ---------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            with self._lock:
                pending, self._pending = self._pending, _Pending()
                received = self._received
            if not pending.empty():
                started = time.monotonic()
                self._apply(pending)
                # Throttle: a flood of optimize_step events becomes a few redraws per second.
                rest = self.config.min_interval - (time.monotonic() - started)
                if rest > 0:
                    self._stopping.wait(rest)
            with self._idle:
                self._applied = received
                self._idle.notify_all()

    def _apply(self, p: _Pending) -> None:
        # Cheap things first so the panel stays live while a big scene is converted.
        self._guard(self._apply_progress, p)
        self._guard(self._apply_cameras, p)
        if p.gaussians is not None:
            self._guard(self._apply_gaussians, p.gaussians)

    def _guard(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:  # a failed draw is logged; the next update retries
            self.errors += 1
            log.warning("viewer update failed: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))

    def _apply_progress(self, p: _Pending) -> None:
        if p.progress is not None:
            self.panel.show(p.progress)

    def _apply_cameras(self, p: _Pending) -> None:
        with self._scene_lock:
            first = not self.scene.cameras
            if p.cameras is not None:
                self.scene.show_cameras(p.cameras)
                self.recorder.size = (p.cameras[0].width, p.cameras[0].height)
                self.view_dropdown.options = tuple(f"view {i}" for i in range(len(p.cameras))) or ("-",)
                if first:
                    self._look_from_behind()
            if p.images:
                self.scene.show_images(p.images)
            if p.current is not None:
                self.scene.set_current(p.current)

    def _look_from_behind(self) -> None:
        """New and already connected browsers start behind the photo's camera, looking into the scene; once
        the first Gaussians show how deep the scene is, once more at that scale."""
        pose = overview_pose(self.scene.cameras[0], self.scene.depth)
        initial = self.server.initial_camera
        initial.position, initial.look_at = pose.position, pose.look_at
        initial.up, initial.fov = pose.up, pose.fov
        for client in self.server.get_clients().values():
            with client.atomic():
                client.camera.position = pose.position
                client.camera.look_at = pose.look_at
                client.camera.up_direction = pose.up
                client.camera.fov = pose.fov

    def _apply_gaussians(self, tensors: Mapping) -> None:
        splats, total = preview_splats(tensors, self.config.max_splats)
        with self._scene_lock:
            self.scene.show_splats(splats, total)
            if not self._framed and self.scene.cameras and len(splats):
                self._framed = True
                self._look_from_behind()
        self.background.set_gaussians(tensors)
        self._update_stats()
        if self.background.enabled:
            for client in self.server.get_clients().values():
                self.background.request(client)

    def _update_stats(self) -> None:
        self.panel.stats.content = splat_stats(
            self.scene.total_splats, self.scene.shown_splats, self.background.enabled
        )

    # --- GUI and clients ------------------------------------------------------------------------------
    def _add_display_controls(self) -> None:
        gui = self.server.gui
        where = "gsplat, CUDA" if default_device() == "cuda" else f"CPU, {self.background.width} px wide"
        with gui.add_folder("Display"):
            self.render_checkbox = gui.add_checkbox(
                "Server render",
                False,
                hint=f"Render every Gaussian on the server ({where}) and show it as the background; "
                "for scenes above the splat budget",
            )
            self.cameras_checkbox = gui.add_checkbox("Show cameras", True)
            self.view_dropdown = gui.add_dropdown("Generation view", ("-",))
            self.fly_button = gui.add_button("Fly to view", hint="Or click a camera frustum in the scene")
        self.render_checkbox.on_update(lambda _: self._client_guard(self._toggle_server_render))
        self.cameras_checkbox.on_update(lambda _: self._client_guard(self._apply_cameras_visible))
        self.fly_button.on_click(lambda event: self._client_guard(self._fly_to_selected, event.client))

    def set_cameras_visible(self, visible: bool) -> None:
        """Show or hide the generation cameras (the "Show cameras" checkbox; viser runs its callback)."""
        self.cameras_checkbox.value = bool(visible)

    def set_server_render(self, enabled: bool) -> None:
        """Switch the full-scene server render on or off (the "Server render" checkbox)."""
        self.render_checkbox.value = bool(enabled)

    def _apply_cameras_visible(self) -> None:
        with self._scene_lock:
            self.scene.set_cameras_visible(bool(self.cameras_checkbox.value))

    def _toggle_server_render(self) -> None:
        enabled = bool(self.render_checkbox.value)
        self.background.enabled = enabled
        with self._scene_lock:
            self.scene.set_splats_visible(not enabled)
        for client in self.server.get_clients().values():
            if enabled:
                self.background.request(client)
            else:
                self.background.clear(client)
        self._update_stats()

    def _on_connect(self, client) -> None:
        client.camera.on_update(lambda cam: self.background.request(cam.client))
        if self.background.enabled:
            self.background.request(client)

    def _fly_to_view(self, index: int, client) -> None:
        self._client_guard(self.fly_to_view, index, client)

    def _fly_to_selected(self, client) -> None:
        choice = self.view_dropdown.value
        if choice.startswith("view "):
            self.fly_to_view(int(choice.split()[1]), client)

    def fly_to_view(self, index: int, client) -> None:
        """Put `client`'s camera on generation camera `index` (what a click on its frustum does)."""
        with self._scene_lock:
            cameras = self.scene.cameras
            distance = max(self.scene.frustum_scale * 4.0, 1e-3)
        if not 0 <= index < len(cameras):
            raise StitchError(f"no generation camera {index}; the run has {len(cameras)}")
        fly_to(client, cameras[index], distance)

    def _client_guard(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:  # GUI callbacks run on viser's pool; log, never raise
            log.warning("viewer GUI action failed: %s", exc)


def start_live_viewer(host: str = "127.0.0.1", port: int = 8080, **config) -> LiveViewer:
    """Start a viewer for `stitch generate --view`; pass `viewer.callback` to the pipeline, `viewer.stop()` at
    the end, show `viewer.url` (the port moves on if `port` is busy). Extra keyword arguments go to
    ViewerConfig (max_splats, chunk_size, render_width, path_dir)."""
    return LiveViewer(ViewerConfig(host=host, port=port, **config))


def live_viewer_at(host: str = "127.0.0.1", port: int = 8080) -> Callable[[Path], LiveViewer]:
    """For `run_generate(live_viewer=...)`: a viewer started once the run folder exists, with the Stitch here
    panel on that run; camera paths saved from the browser go to RUN/paths/, never over a run file."""

    def start(run_root: Path) -> LiveViewer:
        return start_live_viewer(host=host, port=port, path_dir=run_root / "paths", run_dir=run_root)

    return start
