"""Shared fixtures: paths to the real data beside the repo, and small seeded helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(2)

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
