"""Reliability: the viewer listens on loopback only by default, survives browsers coming and going while a
scene grows, and never changes the scene that is generated.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reliability_harness import CLI, REPO, save_photo

LONG = os.environ.get("STITCH_RELIABILITY_LONG") == "1"
CYCLES = 100 if LONG else 20  # at least this many; more while the generation still runs, up to MAX_CYCLES
MAX_CYCLES = 10 * CYCLES


def listening_addresses(port: int) -> list[str]:
    """Addresses with a TCP socket in LISTEN state on `port` (from /proc/net/tcp and tcp6)."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                addr, hex_port = fields[1].split(":")
                if fields[3] == "0A" and int(hex_port, 16) == port:
                    if width == 8:
                        found.append(socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1]))
                    else:
                        raw = b"".join(bytes.fromhex(addr[i : i + 8])[::-1] for i in range(0, 32, 8))
                        found.append(socket.inet_ntop(socket.AF_INET6, raw))
    return found


def test_cli_defaults_bind_loopback():
    import typer.main

    from cli import app
    from viewer.server import ViewerConfig

    commands = typer.main.get_command(app).commands
    for name in ("generate", "view"):
        host = next(p for p in commands[name].params if p.name == "host")
        assert host.default == "127.0.0.1", name
    assert ViewerConfig().host == "127.0.0.1"


def test_stitch_view_listens_on_127_0_0_1_only(tmp_path):
    """`stitch view` in its own process: the only listening socket on its port is 127.0.0.1."""
    from splat.formats.io import save_scene
    from splat.gaussians import Gaussians

    g = torch.Generator().manual_seed(0)
    n = 200
    scene = Gaussians(
        {
            "means": torch.randn(n, 3, generator=g) + torch.tensor([0.0, 0.0, 3.0]),
            "scales": torch.full((n, 3), -3.0),
            "quats": torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
            "opacities": torch.zeros(n),
            "sh0": torch.rand(n, 1, 3, generator=g),
            "shN": torch.zeros(n, 0, 3),
        }
    )
    save_scene(scene, tmp_path / "scene.ply")
    proc = subprocess.Popen(
        [*CLI, "view", str(tmp_path / "scene.ply"), "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = ""
        deadline = time.monotonic() + 120
        while "stitch view:" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        assert "stitch view: http://127.0.0.1:" in line, (line, proc.poll())
        port = int(line.rsplit(":", 1)[1].split()[0])
        assert listening_addresses(port) == ["127.0.0.1"]
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: stops cleanly (0, or 130 if it lands before the wait loop)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 130) and "Traceback" not in err, err


def _client_storm(port: int, cycles: int, running: threading.Event, report: dict) -> None:
    """Connect/disconnect `cycles` websocket clients (up to 4 open at once, every third one dropped without a
    closing handshake, one with the wrong protocol version); more while the generation runs (bounded)."""
    import viser
    from websockets.sync.client import connect

    uri = f"ws://127.0.0.1:{port}"
    good = [f"viser-v{viser.__version__}"]
    open_conns: list = []
    done = during = received = 0
    try:
        while done < cycles or (running.is_set() and done < MAX_CYCLES):
            i = done
            protocols = ["viser-v0.0.0"] if i == 5 else good
            conn = connect(uri, subprotocols=protocols, open_timeout=20, close_timeout=2)
            try:
                conn.recv(timeout=10)
                received += 1
            except Exception:  # the wrong-version client is closed by the server at once
                if i != 5:
                    raise
            open_conns.append((i, conn))
            if len(open_conns) > 3:
                j, old = open_conns.pop(0)
                if j % 3 == 0:
                    old.socket.close()  # a browser tab killed: no closing handshake
                else:
                    old.close()
            done += 1
            during += running.is_set()
    except Exception as exc:  # reported to the test
        report["error"] = repr(exc)
    finally:
        for _, conn in open_conns:
            conn.close()
        report.update(cycles=done, during_generation=during, received=received)


def test_many_clients_while_generating_do_not_change_the_scene(tmp_path):
    from engine.config import GenerateConfig, OptimConfig
    from engine.run import run_generate
    from viewer.server import start_live_viewer

    torch.set_num_threads(1)
    photo = save_photo(tmp_path / "photo.png", 96, 64, seed=11)
    cfg = GenerateConfig(photo=photo, mode="360", seed=4, max_side=48, optim=OptimConfig(steps_per_view=2))
    run_generate(cfg, output=tmp_path / "plain" / "scene.ply", quiet=True)

    viewer = start_live_viewer(port=0, render_width=64)
    try:
        assert listening_addresses(viewer.port) == ["127.0.0.1"]
        running, report = threading.Event(), {}
        running.set()
        storm = threading.Thread(
            target=_client_storm, args=(viewer.port, CYCLES, running, report), daemon=True
        )
        storm.start()
        try:
            result = run_generate(
                cfg, output=tmp_path / "viewed" / "scene.ply", quiet=True, extra_callbacks=[viewer.callback]
            )
        finally:
            running.clear()
        storm.join(timeout=300)
        assert "error" not in report, report
        assert report["cycles"] >= CYCLES and report["during_generation"] >= 1, report
        assert report["received"] >= CYCLES - 1, report  # every accepted client was sent the scene state
        assert viewer.wait_idle(60)
        assert viewer.errors == 0  # no draw failed while clients came and went
        # Still serving: a new client connects and gets messages; the scene shown is the generated one.
        import viser
        from websockets.sync.client import connect

        with connect(f"ws://127.0.0.1:{viewer.port}", subprotocols=[f"viser-v{viser.__version__}"]) as late:
            late.recv(timeout=10)
        assert viewer.scene.total_splats == len(result.gaussians)
    finally:
        viewer.stop()
    assert (tmp_path / "viewed" / "scene.ply").read_bytes() == (tmp_path / "plain" / "scene.ply").read_bytes()


def test_exposing_the_viewer_is_explicit():
    """Only an explicit --host 0.0.0.0 listens beyond loopback (the opt-in the flag's help names)."""
    from viewer.server import start_live_viewer

    viewer = start_live_viewer(host="0.0.0.0", port=0)
    try:
        assert listening_addresses(viewer.port) == ["0.0.0.0"]
    finally:
        viewer.stop()
