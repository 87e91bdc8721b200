"""The live viewer server (no browser): what it draws from pipeline events, that it never holds generation
up, survives clients coming and going, and frees its port."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("viser")

from engine.config import OptimConfig
from engine.events import PipelineEvent
from engine.trajectory import trajectory
from splat.cameras import unproject_depth
from splat.gaussians import Gaussians
from viewer.server import LiveViewer, ViewerConfig, start_live_viewer

W, H = 48, 32


@pytest.fixture(scope="module")
def photo(kyoto) -> np.ndarray:
    with Image.open(kyoto) as img:
        return np.asarray(img.convert("RGB").resize((W, H), Image.Resampling.BOX))


def seeded_scene(photo: np.ndarray) -> Gaussians:
    """The photo on a slanted plane (top farther than bottom), one Gaussian per pixel."""
    cam = trajectory("single", W, H)[0]
    v = np.arange(H, dtype=np.float64)[:, None] + 0.5
    depth = np.broadcast_to(2.0 + 2.0 * (1.0 - v / H), (H, W)).copy()
    return Gaussians.from_points(unproject_depth(cam, depth), photo.reshape(-1, 3) / 255.0, sh_degree=0)


def events_for(photo: np.ndarray, gaussians: Gaussians, views: int = 3) -> list[PipelineEvent]:
    cams = trajectory("stage", W, H)[:views]
    out = [PipelineEvent("run_started", -1, views, cameras=cams)]
    for k in range(views):
        out.append(PipelineEvent("view_started", k, views, cameras=cams))
        out.append(PipelineEvent("view_added", k, views, cameras=cams, image=photo))
        for s in range(1, 6):
            out.append(
                PipelineEvent("optimize_step", k, views, cameras=cams, step=s, total_steps=5, loss=0.1 / s)
            )
        out.append(
            PipelineEvent("view_finished", k, views, cameras=cams, image=photo, gaussians=gaussians.tensors())
        )
    out.append(PipelineEvent("run_finished", views - 1, views, cameras=cams, gaussians=gaussians.tensors()))
    return out


def node_names(viewer: LiveViewer) -> set[str]:
    return set(viewer.server.scene._handle_from_node_name)  # viser's scene tree, as the browser lists it


def splats_sent(viewer: LiveViewer) -> int:
    return sum(int(h.buffer.shape[0]) for h in viewer.scene.splat_handles)


def test_events_draw_splats_in_chunks_and_camera_frusta(photo):
    g = seeded_scene(photo)
    with LiveViewer(ViewerConfig(port=0, chunk_size=500, max_splats=100_000)) as viewer:
        assert viewer.host == "127.0.0.1" and viewer.server.get_host() == "127.0.0.1"
        for event in events_for(photo, g):
            viewer.callback(event)
        assert viewer.wait_idle(30)
        names = node_names(viewer)
        chunks = sorted(n for n in names if n.startswith("/scene/splats/chunk_"))
        assert len(chunks) == -(-len(g) // 500)  # 1536 splats -> 4 nodes of at most 500
        assert splats_sent(viewer) == len(g)
        assert {f"/cameras/view_{i:03d}" for i in range(3)} <= names
        assert all(viewer.scene.frustum_handles[i].image is not None for i in range(3))
        assert "Finished" in viewer.panel.status.content and viewer.panel.bar.value == 100.0
        assert f"{len(g):,} Gaussians" in viewer.panel.stats.content
        assert viewer.errors == 0


def test_splat_budget_caps_what_is_sent_and_says_so(photo):
    g = seeded_scene(photo)
    with LiveViewer(ViewerConfig(port=0, chunk_size=400, max_splats=1000)) as viewer:
        viewer.show(g.tensors(), trajectory("stage", W, H), status="scene")
        assert viewer.wait_idle(30)
        assert splats_sent(viewer) == 1000
        assert len([n for n in node_names(viewer) if n.startswith("/scene/splats/chunk_")]) == 3
        assert "drawing a 1,000 sample" in viewer.panel.stats.content
        # A smaller scene afterwards leaves no stale chunk nodes behind.
        viewer.show({k: v[:300] for k, v in g.tensors().items()})
        assert viewer.wait_idle(30)
        assert [n for n in node_names(viewer) if n.startswith("/scene/splats/chunk_")] == [
            "/scene/splats/chunk_000"
        ]
        assert splats_sent(viewer) == 300


def test_callback_never_waits_for_a_busy_viewer_and_only_the_newest_scene_is_drawn(photo):
    g = seeded_scene(photo)
    with LiveViewer(ViewerConfig(port=0, min_interval=0.0)) as viewer:
        release = threading.Event()
        drawn: list[int] = []
        original = viewer.scene.show_splats

        def slow_show(splats, total):
            release.wait(20)  # a browser-bound draw that takes "forever"
            drawn.append(total)
            original(splats, total)

        viewer.scene.show_splats = slow_show
        viewer.callback(PipelineEvent("view_finished", 0, 3, gaussians=g.tensors()))
        time.sleep(0.2)  # the worker is now stuck inside slow_show

        def generation():
            for n in range(1, 201):
                part = {k: v[: n * 5] for k, v in g.tensors().items()}
                viewer.callback(PipelineEvent("view_finished", 0, 3, gaussians=part))

        gen = threading.Thread(target=generation)
        gen.start()
        gen.join(timeout=10)
        finished_while_viewer_blocked = not gen.is_alive()
        release.set()
        assert finished_while_viewer_blocked
        assert viewer.wait_idle(30)
        assert drawn[-1] == 1000 and len(drawn) <= 3  # 201 snapshots, at most 3 draws, the last one wins
        assert splats_sent(viewer) == 1000


def test_a_failing_draw_is_logged_and_the_next_update_still_shows(photo):
    g = seeded_scene(photo)
    with LiveViewer(ViewerConfig(port=0)) as viewer:
        original = viewer.scene.show_splats
        calls = []

        def flaky(splats, total):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("browser went away mid-send")
            original(splats, total)

        viewer.scene.show_splats = flaky
        viewer.callback(PipelineEvent("view_finished", 0, 1, gaussians=g.tensors()))
        assert viewer.wait_idle(30)
        viewer.callback(PipelineEvent("run_finished", 0, 1, gaussians=g.tensors()))
        assert viewer.wait_idle(30)
        assert viewer.errors == 1 and splats_sent(viewer) == len(g)
        # A malformed snapshot fails in the worker, is counted, and the worker carries on.
        viewer.callback(PipelineEvent("view_finished", 0, 1, gaussians={"means": torch.zeros(2, 3)}))
        assert viewer.wait_idle(30)
        assert viewer.errors == 2 and viewer._worker.is_alive()


def _ws_client(port: int):
    """A bare websocket client speaking viser's protocol: it announces a camera, as a browser tab does, which
    is when viser counts it as a client."""
    import msgspec
    import viser
    from viser._messages import ViewerCameraMessage
    from websockets.sync.client import connect

    ws = connect(f"ws://127.0.0.1:{port}", subprotocols=[f"viser-v{viser.__version__}"], max_size=None)
    camera = ViewerCameraMessage(
        (1.0, 0.0, 0.0, 0.0), (0.0, 0.0, -1.0), 0.8, 0.01, 100.0, 480, 640, (0, 0, 1), (0, -1, 0)
    )
    ws.send(msgspec.msgpack.encode(camera.as_serializable_dict()))
    return ws


def _wait_for_clients(viewer: LiveViewer, n: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while len(viewer.server.get_clients()) != n and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(viewer.server.get_clients())


def _received_bytes(ws, at_least: int, timeout: float = 10.0) -> int:
    total, deadline = 0, time.monotonic() + timeout
    while total < at_least and time.monotonic() < deadline:
        try:
            msg = ws.recv(timeout=0.5)
        except TimeoutError:
            continue
        total += len(msg)
    return total


def test_port_is_free_after_stop_even_with_a_client_connected():
    viewer = start_live_viewer("127.0.0.1", 0)
    port = viewer.port
    ws = _ws_client(port)
    assert _wait_for_clients(viewer, 1) == 1
    viewer.stop()
    viewer.stop()  # twice is harmless
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with socket.socket() as s:  # what any server does: bind + listen on the same port
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
    again = start_live_viewer("127.0.0.1", port)  # viser would silently move to port+1 if it were busy
    try:
        assert again.port == port
    finally:
        again.stop()
    ws.close()


class _FlatDepth:
    """Depth stand-in: known depth kept, unknown pixels at the median known depth (3 m for the first view)."""

    name = "flat-test"

    def describe(self) -> dict:
        return {"backend": self.name}

    def __call__(self, image, known_depth, known_mask):
        fill = float(np.median(known_depth[known_mask])) if known_mask.any() else 3.0
        return np.where(known_mask, known_depth, fill).astype(np.float32)


def test_clients_connecting_and_dropping_mid_generation_do_not_change_the_scene(photo):
    from engine.backends.outpaint_classical import ClassicalOutpainter
    from engine.pipeline import StitchPipeline

    image = photo.astype(np.float32) / 255.0
    cams = trajectory("stage", W, H)

    def generate(callbacks):
        torch.manual_seed(0)
        pipe = StitchPipeline(
            ClassicalOutpainter(), _FlatDepth(), optim=OptimConfig(steps_per_view=3), sh_degree=1
        )
        return pipe(image, cams, seed=0, callbacks=callbacks)

    reference = generate([])

    viewer = start_live_viewer("127.0.0.1", 0)
    connected, dropped = threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def browsers():
        # Two clients arrive after view 0 is out, take in the scene, then one drops its socket without a
        # goodbye (a killed tab) and the other closes politely, all while views 1 and 2 are being made.
        first = _ws_client(viewer.port)
        second = _ws_client(viewer.port)
        seen["first"] = _received_bytes(first, 20_000)
        seen["second"] = _received_bytes(second, 20_000)
        seen["clients"] = _wait_for_clients(viewer, 2)
        connected.set()
        first.socket.shutdown(socket.SHUT_RDWR)
        first.socket.close()
        second.close()
        seen["after"] = _wait_for_clients(viewer, 0)
        dropped.set()

    def gate(event: PipelineEvent) -> None:
        # The test's own subscriber orders things: view 1 starts once clients are in, view 2 once they left.
        if event.kind == "view_finished" and event.view_index == 0:
            threading.Thread(target=browsers, daemon=True).start()
        if event.kind == "view_started" and event.view_index == 1:
            assert connected.wait(20)
        if event.kind == "view_started" and event.view_index == 2:
            assert dropped.wait(20)

    try:
        result = generate([viewer.callback, gate])
        assert viewer.wait_idle(30)
        assert connected.is_set() and dropped.is_set()
        assert seen["clients"] == 2 and seen["after"] == 0
        assert seen["first"] >= 20_000 and seen["second"] >= 20_000  # view 0's splats reached both
        assert splats_sent(viewer) == len(result.gaussians) and viewer.errors == 0
    finally:
        viewer.stop()
    assert len(result.gaussians) == len(reference.gaussians)
    for key, value in reference.gaussians.tensors().items():
        torch.testing.assert_close(result.gaussians.tensors()[key], value, rtol=0, atol=0)
