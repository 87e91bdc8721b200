"""Shared fixtures: paths to the real data beside the repo, and small seeded helpers."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(2)

# CPU-only tests stay on the CPU on a GPU machine too ("auto" devices honour STITCH_DEVICE: generation,
# refine, render, video, the learned backends, training): their exact numbers, bit-equality and budgets are
# CPU facts. Tests marked `gpu` get "auto" back (below); STITCH_DEVICE=auto runs everything where it lands.
os.environ.setdefault("STITCH_DEVICE", "cpu")

# The Ctrl-C tests send SIGINT to child processes. Started in the background (`nohup`, `&`), the suite
# inherits SIGINT ignored and so would every child (an ignored signal survives exec): an "interrupted" run
# then finished with exit 0 and `stitch view` never stopped. Children get the terminal's default back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _gpu_tests_choose_their_device(request, monkeypatch):
    if request.node.get_closest_marker("gpu") is not None:
        monkeypatch.setenv("STITCH_DEVICE", "auto")


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KYOTO = "photo-1667788000333-4e36f948de9a.jpeg"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present beside the repo")
    return SHARED_DATA


@pytest.fixture(scope="session")
def photos(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "photos").glob("*.jpeg"))


@pytest.fixture(scope="session")
def kyoto(shared_data: Path) -> Path:
    return shared_data / "photos" / KYOTO


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
