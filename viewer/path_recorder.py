"""Record a camera path in the browser: keyframes from the client camera, saved as splat.cameras' JSON.

The file is the same format `stitch generate --path` and `stitch video` read (`save_camera_path`). Keyframes
are taken at a reference size (the run's image size when known) with the client's vertical field of view.
Saving only writes plain file names inside one directory, so a browser (possibly remote, with --host)
cannot write anywhere else on the machine.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from splat.cameras import Camera
from splat.errors import StitchError
from splat.formats.camera_path import save_camera_path
from viewer.convert import camera_from_viser, camera_to_viser

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}\.json$")
KEYFRAME_COLOR = (0, 170, 90)


def client_camera(client, width: int | None = None, height: int | None = None) -> Camera:
    """The client's current view as a stitch Camera, at width x height (default: the browser canvas)."""
    cam = client.camera
    w = int(width or cam.image_width or 640)
    h = int(height or cam.image_height or 480)
    return camera_from_viser(cam.wxyz, cam.position, float(cam.fov), w, h)


def fly_to(client, camera: Camera, distance: float = 1.0) -> None:
    """Move a client's camera onto `camera` (pose and vertical field of view); orbiting pivots `distance`
    ahead of it."""
    pose = camera_to_viser(camera, distance)
    with client.atomic():
        client.camera.position = pose.position
        client.camera.look_at = pose.look_at
        client.camera.up_direction = pose.up
        client.camera.fov = pose.fov


# Names a run directory uses: never a camera path's, even inside its own folder.
RESERVED_NAMES = {"manifest.json", "state.json", "quality.json"}


def check_path_name(name: str) -> str:
    name = name.strip()
    if not SAFE_NAME.match(name) or ".." in name or name.lower() in RESERVED_NAMES:
        raise StitchError(f"camera path file name {name!r} is not allowed; use a plain name ending in .json")
    return name


class PathRecorder:
    def __init__(self, server, directory: Path, default_name: str = "camera_path.json") -> None:
        self.server = server
        self.directory = Path(directory)
        self.size: tuple[int, int] | None = None  # reference width, height of saved cameras
        self.keyframes: list[Camera] = []
        self._handles: list = []
        self._lock = threading.Lock()
        gui = server.gui
        with gui.add_folder("Camera path"):
            self.info = gui.add_markdown("No keyframes.")
            self.add_button = gui.add_button("Add keyframe", hint="Append the current view to the path")
            self.clear_button = gui.add_button("Clear")
            self.name = gui.add_text("File", initial_value=default_name, hint=f"saved in {self.directory}")
            self.save_button = gui.add_button("Save path")
        self.add_button.on_click(lambda event: self._guard(self.add_keyframe, event.client))
        self.clear_button.on_click(lambda event: self._guard(self.clear))
        self.save_button.on_click(lambda event: self._guard(self._save_clicked, event.client))

    def add_keyframe(self, client) -> Camera:
        width, height = self.size if self.size else (None, None)
        camera = client_camera(client, width, height)
        with self._lock:
            self.keyframes.append(camera)
            index = len(self.keyframes) - 1
        pose = camera_to_viser(camera)
        self._handles.append(
            self.server.scene.add_camera_frustum(
                f"/path/key_{index:03d}",
                fov=pose.fov,
                aspect=pose.aspect,
                scale=0.1,
                color=KEYFRAME_COLOR,
                wxyz=pose.wxyz,
                position=pose.position,
            )
        )
        self.info.content = f"{len(self.keyframes)} keyframes."
        return camera

    def clear(self) -> None:
        with self._lock:
            self.keyframes = []
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.info.content = "No keyframes."

    def save(self, name: str) -> Path:
        """Write the keyframes to directory/name (JSON camera path) and return the path."""
        path = self.directory / check_path_name(name)
        with self._lock:
            cameras = list(self.keyframes)
        if not cameras:
            raise StitchError("no keyframes to save; press 'Add keyframe' first")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            save_camera_path(cameras, path)  # atomic
        except OSError as exc:
            raise StitchError(f"cannot save {path} ({exc.strerror or exc})") from exc
        self.info.content = f"{len(cameras)} keyframes saved to `{path}`."
        return path

    def _save_clicked(self, client) -> None:
        path = self.save(self.name.value)
        client.add_notification("Camera path saved", str(path), auto_close_seconds=4.0)

    def _guard(self, fn, *args) -> None:
        """GUI callbacks report problems in the panel instead of raising into viser's thread pool."""
        try:
            fn(*args)
        except Exception as exc:  # a bad click must never take the viewer down
            self.info.content = f"**Error:** {exc}"
