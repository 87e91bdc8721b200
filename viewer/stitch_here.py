"""The viewer's "Stitch here" panel: grow the run where the browser looks, and Undo.

The panel only asks the engine (engine.extend, the same call as `stitch extend`): the browser's camera at the
press becomes the run's next camera, the pipeline stitches it and reports through the viewer's own event
subscriber, so the new Gaussians and the progress show as during `generate --view`. One request at a time:
a press while a view is being stitched is refused with a notification, never interleaved; the buttons are
greyed for every browser meanwhile. The panel's controls are shared, so all browsers see one state.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from splat.cameras import Camera
from splat.errors import StitchError
from viewer.path_recorder import client_camera

log = logging.getLogger("stitch.viewer")

READY = "Fly to a viewpoint, then press **Stitch here** to grow the scene there."


class StitchHerePanel:
    def __init__(self, viewer, run_dir: Path) -> None:
        self.viewer = viewer
        self.root = Path(run_dir)
        self._busy = threading.Lock()
        self._thread: threading.Thread | None = None
        self._backends = None  # the run's models, loaded at the first press and kept
        self.last_result = None  # ExtendResult of the last stitch
        self.last_error: str | None = None
        gui = viewer.server.gui
        with gui.add_folder("Stitch here"):
            self.info = gui.add_markdown(READY)
            self.prompt = gui.add_text("Prompt", initial_value="", hint="Empty: the run's prompt")
            self.stitch_button = gui.add_button(
                "Stitch here", hint="Render, outpaint and complete this view, then add it to the run"
            )
            self.undo_button = gui.add_button("Undo", hint="Remove the last added view")
        self.stitch_button.on_click(lambda event: self._guard(self.request_stitch, event.client))
        self.undo_button.on_click(lambda event: self._guard(self.request_undo, event.client))

    # --- requests (GUI callbacks; return at once) -----------------------------------------------------
    def request_stitch(self, client, camera: Camera | None = None) -> bool:
        """Stitch the client's current view (or `camera`) on the panel's thread; False if busy."""
        if camera is None:
            camera = self.camera_of(client)  # the pose at the press, not when the thread gets to it
        prompt = self.prompt.value.strip() or None
        return self._start(client, self.stitch, camera, prompt)

    def request_undo(self, client=None) -> bool:
        return self._start(client, self.undo)

    def wait(self, timeout: float = 300.0) -> bool:
        """Block until the current request is done (tests, scripts)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    @property
    def busy(self) -> bool:
        return self._busy.locked()

    def use_backends(self, outpainter, depth_completer) -> None:
        """Stitch with models already loaded (generate --view hands over its own: no second copy)."""
        self._backends = (outpainter, depth_completer)

    # --- the operations (blocking) --------------------------------------------------------------------
    def camera_of(self, client) -> Camera:
        """The browser's view at the run's image size (its vertical field of view kept)."""
        from engine.rundir import RunDirectory

        size = RunDirectory(self.root).read_manifest().get("image_size")
        if not (isinstance(size, list) and len(size) == 2):
            raise StitchError(f"{self.root}/manifest.json has no image_size; it cannot be extended")
        return client_camera(client, int(size[0]), int(size[1]))

    def stitch(self, camera: Camera, prompt: str | None = None):
        from engine.extend.grow import extend_run, load_backends
        from engine.extend.state import read_run

        state = read_run(self.root)  # refuses a run that is still generating
        if self._backends is None:
            self._say(f"Loading the run's models for view {len(state.cameras) + 1}…")
            self._backends = load_backends(state)
        k = len(state.cameras)  # 0-based, as in views/view_XXX; the panel counts from 1 like the status
        self._say(f"Stitching view {k + 1}: rendering, outpainting, completing depth…")
        result = extend_run(
            self.root,
            [camera],
            prompt=prompt,
            callbacks=[self.viewer.callback],
            backends=self._backends,
        )
        self.last_result = result
        added = result.n_after - result.n_before
        self._say(
            f"Added view {k + 1}: +{added:,} Gaussians ({result.n_after:,} in all). **Undo** removes it."
        )
        return result

    def undo(self) -> int:
        from engine.extend.undo import undo_last
        from viewer.saved_scene import load_saved

        k = undo_last(self.root)
        saved = load_saved(self.root)
        self.viewer.show(saved.gaussians, saved.cameras, saved.images, status=saved.summary)
        self._say(f"Removed view {k + 1}; the scene is as it was before it.")
        return k

    # --- plumbing -------------------------------------------------------------------------------------
    def _start(self, client, fn, *args) -> bool:
        if not self._busy.acquire(blocking=False):
            self._notify(client, "Busy", "A view is being stitched; wait for it to finish, then press again.")
            return False
        self.last_error = None
        self._set_enabled(False)
        self._thread = threading.Thread(
            target=self._run, args=(client, fn, args), name="stitch-here", daemon=True
        )
        self._thread.start()
        return True

    def _run(self, client, fn, args) -> None:
        try:
            fn(*args)
        except StitchError as exc:  # guard rails and user-facing problems: one line in the panel
            self.last_error = str(exc)
            self._say(f"**Not stitched:** {exc}")
            self._notify(client, "Not stitched", str(exc))
        except Exception as exc:  # anything else is logged; the viewer keeps running
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("stitch here failed: %s", exc, exc_info=True)
            self._say(f"**Failed:** {self.last_error}")
        finally:
            self._set_enabled(True)
            self._busy.release()

    def _set_enabled(self, enabled: bool) -> None:
        self.stitch_button.disabled = not enabled
        self.undo_button.disabled = not enabled

    def _say(self, text: str) -> None:
        self.info.content = text

    @staticmethod
    def _notify(client, title: str, body: str) -> None:
        if client is None:
            return
        try:
            client.add_notification(title, body, auto_close_seconds=6.0)
        except Exception as exc:  # a closed browser cannot be told
            log.debug("notification dropped: %s", exc)

    def _guard(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:  # GUI callbacks run on viser's pool; report, never raise
            self.last_error = str(exc)
            self._say(f"**Not stitched:** {exc}")
