"""stitch viewer: a viser server that shows a scene growing (pipeline events) or a saved scene / run.

viser is an optional dependency (`pip install stitch[viewer]`); importing this package does not import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from viewer.saved import serve_saved
    from viewer.saved_scene import SavedScene, load_saved
    from viewer.server import LiveViewer, ViewerConfig, live_viewer_at, start_live_viewer

__all__ = [
    "LiveViewer",
    "SavedScene",
    "ViewerConfig",
    "live_viewer_at",
    "load_saved",
    "serve_saved",
    "start_live_viewer",
]

_HOMES = {
    "LiveViewer": "viewer.server",
    "ViewerConfig": "viewer.server",
    "start_live_viewer": "viewer.server",
    "live_viewer_at": "viewer.server",
    "SavedScene": "viewer.saved_scene",
    "load_saved": "viewer.saved_scene",
    "serve_saved": "viewer.saved",
}


def __getattr__(name: str):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'viewer' has no attribute {name!r}")
