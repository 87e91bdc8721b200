"""`stitch view SCENE.ply|RUN_DIR`: show a saved scene, and for a run directory its cameras and view images.

A run directory (engine/rundir.py) holds manifest.json ("cameras": [Camera.to_dict(), ...]), the scene as
scene.ply (or wherever manifest["exports"]["ply"] points) and views/view_XXX.png. An unfinished run has no
scene file yet; its latest checkpoint is shown instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

from engine.interrupts import wait_for_interrupt
from viewer.saved_scene import load_saved


def serve_saved(path: str | Path, host: str = "127.0.0.1", port: int = 8080, block: bool = True, **config):
    """Start a viewer on a saved scene or run directory. With block=True, serve until Ctrl-C, then stop.

    Returns the LiveViewer (already stopped when block=True). Extra keyword arguments go to ViewerConfig.
    """
    from viewer.server import LiveViewer, ViewerConfig

    saved = load_saved(path, spz_axes=config.pop("spz_axes", "rdf"))
    # Recorded paths go to a folder of their own, never over a run file (manifest.json) or the scene.
    config.setdefault("path_dir", saved.directory / "paths")
    if Path(path).is_dir():  # a run directory can grow: the Stitch-here panel
        config.setdefault("run_dir", saved.directory)
    viewer = LiveViewer(ViewerConfig(host=host, port=port, panel_title="Scene", **config))
    viewer.show(saved.gaussians, saved.cameras, saved.images, status=saved.summary)
    if block:
        print(f"stitch view: {viewer.url} (Ctrl-C to stop)", flush=True)
        try:
            wait_for_interrupt()
        except KeyboardInterrupt:
            pass
        finally:
            _stop_within(viewer, seconds=20.0)
    return viewer


def _stop_within(viewer, seconds: float) -> None:
    """Stop the viewer, but never hang the terminal: a server thread that does not stop within `seconds`
    is abandoned with one line and the process ends (this is the CLI's foreground loop)."""
    import os
    import threading

    done = threading.Event()

    def stop() -> None:
        try:
            viewer.stop()
        finally:
            done.set()

    threading.Thread(target=stop, daemon=True, name="viewer-stop").start()
    if not done.wait(seconds):
        print(f"stitch view: the viewer did not stop within {seconds:.0f} s; exiting", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
