"""Draws the scene on a viser server: Gaussians as chunked splat nodes, generation cameras as frusta.

Only the viewer's worker thread calls these (viser handles are not meant to be raced). Node names:
    /scene/splats/chunk_000 ...    the Gaussians, at most `chunk_size` splats per node
    /cameras/view_000 ...          one frustum per generation camera, with its view image once it exists
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from splat.cameras import Camera
from viewer.convert import SplatArrays, camera_to_viser, chunk_slices, thumbnail

SPLAT_ROOT = "/scene/splats"
CAMERA_ROOT = "/cameras"

PENDING_COLOR = (150, 150, 150)  # planned view, no image yet
CURRENT_COLOR = (255, 120, 0)  # view being stitched
DONE_COLOR = (30, 30, 30)


def camera_node_name(index: int) -> str:
    return f"{CAMERA_ROOT}/view_{index:03d}"


def scene_radius(centers: np.ndarray, origin: np.ndarray) -> float:
    """Median distance of the splats from `origin`: sets a frustum size that fits the scene."""
    if len(centers) == 0:
        return 0.0
    return float(np.median(np.linalg.norm(centers - origin[None], axis=1)))


class SceneSync:
    def __init__(self, server, max_splats: int, chunk_size: int, thumbnail_width: int) -> None:
        self.server = server
        self.max_splats = max_splats
        self.chunk_size = chunk_size
        self.thumbnail_width = thumbnail_width
        self.splat_handles: list = []
        self.frustum_handles: dict[int, object] = {}
        self.cameras: list[Camera] = []
        self.images: dict[int, np.ndarray] = {}  # thumbnails shown on frusta
        self.current: int = -1
        self.frustum_scale = 0.25
        self.depth = 3.0  # median distance of the Gaussians from the first camera, once there are some
        self.total_splats = 0
        self.shown_splats = 0
        self.splats_visible = True
        self.cameras_visible = True
        self.on_camera_click: Callable[[int, object], None] | None = None

    # --- Gaussians --------------------------------------------------------------------------------
    def show_splats(self, preview: SplatArrays, total: int) -> None:
        """Replace the drawn Gaussians with `preview` (at most the budget; see preview_splats), in chunks;
        `total` is the scene's full size."""
        self.total_splats = total
        self.shown_splats = len(preview)
        slices = chunk_slices(len(preview), self.chunk_size)
        with self.server.atomic():
            handles = []
            for i, sl in enumerate(slices):
                part = preview.subset(sl)
                handles.append(
                    self.server.scene.add_gaussian_splats(
                        f"{SPLAT_ROOT}/chunk_{i:03d}",
                        centers=part.centers,
                        covariances=part.covariances,
                        rgbs=part.rgbs,
                        opacities=part.opacities,
                        visible=self.splats_visible,
                    )
                )
            # Same-name nodes were replaced above; drop chunks the smaller scene no longer needs.
            for old in self.splat_handles[len(handles) :]:
                old.remove()
            self.splat_handles = handles
        if self.cameras and len(preview):
            self.depth = scene_radius(preview.centers, self.cameras[0].center) or self.depth
            self._fit_frusta()

    def set_splats_visible(self, visible: bool) -> None:
        self.splats_visible = visible
        for handle in self.splat_handles:
            handle.visible = visible

    # --- cameras ----------------------------------------------------------------------------------
    def set_cameras_visible(self, visible: bool) -> None:
        self.cameras_visible = visible
        for handle in self.frustum_handles.values():
            handle.visible = visible

    def show_cameras(self, cameras: Sequence[Camera]) -> None:
        """Draw every camera of the run; planned ones grey until their view exists."""
        if _same_cameras(cameras, self.cameras):
            return
        for handle in self.frustum_handles.values():
            handle.remove()
        self.frustum_handles = {}
        self.cameras = list(cameras)
        for i in range(len(self.cameras)):
            self._add_frustum(i)

    def show_images(self, images: Mapping[int, np.ndarray]) -> None:
        for index, image in images.items():
            self.images[index] = thumbnail(image, self.thumbnail_width)
            if index in self.frustum_handles:
                self._add_frustum(index)

    def set_current(self, index: int) -> None:
        """Highlight the view being stitched (index -1: none)."""
        if index == self.current:
            return
        old, self.current = self.current, index
        for i in (old, index):
            if i in self.frustum_handles:
                self.frustum_handles[i].color = self._color(i)

    def _color(self, index: int) -> tuple[int, int, int]:
        if index == self.current:
            return CURRENT_COLOR
        return DONE_COLOR if index in self.images else PENDING_COLOR

    def _add_frustum(self, index: int) -> None:
        camera = self.cameras[index]
        pose = camera_to_viser(camera)
        handle = self.server.scene.add_camera_frustum(
            camera_node_name(index),
            fov=pose.fov,
            aspect=pose.aspect,
            scale=self.frustum_scale,
            thickness=2.0,
            thickness_units="screen",
            color=self._color(index),
            image=self.images.get(index),
            format="jpeg",
            jpeg_quality=85,
            wxyz=pose.wxyz,
            position=pose.position,
            visible=self.cameras_visible,
        )
        callback = self.on_camera_click
        if callback is not None:
            handle.on_click(lambda event, i=index: callback(i, event.client))
        self.frustum_handles[index] = handle

    def _fit_frusta(self) -> None:
        """Size frusta to a tenth of the scene's depth once the scene exists (redrawn on big changes only)."""
        scale = float(np.clip(0.1 * self.depth, 1e-3, 1e3))
        if abs(np.log(scale / self.frustum_scale)) > np.log(1.5):
            self.frustum_scale = scale
            for i in list(self.frustum_handles):
                self._add_frustum(i)


def _same_cameras(a: Sequence[Camera], b: Sequence[Camera]) -> bool:
    return len(a) == len(b) and all(
        x.width == y.width
        and x.height == y.height
        and np.array_equal(x.K, y.K)
        and np.array_equal(x.world_to_camera, y.world_to_camera)
        for x, y in zip(a, b, strict=True)
    )
