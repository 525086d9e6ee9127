"""Shared fixtures: where the real data live, and small configs for fast runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlp_research.config import Config

REPO = Path(__file__).resolve().parents[1]


def real_data_dir() -> str | None:
    """The real Fashion-MNIST IDX files: $MLP_RESEARCH_DATA_DIR or ../shared/data/fashion_mnist."""
    for candidate in (os.environ.get("MLP_RESEARCH_DATA_DIR", ""), str(REPO.parent / "shared/data/fashion_mnist")):
        if candidate and os.path.exists(os.path.join(candidate, "train-images-idx3-ubyte.gz")):
            return candidate
    return None


@pytest.fixture
def data_dir() -> str:
    path = real_data_dir()
    if path is None:
        pytest.skip("real Fashion-MNIST IDX files not found (set MLP_RESEARCH_DATA_DIR)")
    return path


def tiny_config(**overrides) -> Config:
    """Synthetic data, small enough that a run takes about a second."""
    values = dict(
        dataset="synthetic", synthetic_train_size=1000, synthetic_test_size=300, batch_size=64,
        max_epochs=2, progress=False, eval_batch_size=128,
    )
    values.update(overrides)
    return Config().replace(**values)


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for this test process (tests/postgres.py); skipped where its binaries are missing."""
    from postgres import Server

    server = Server().start()
    yield server
    server.stop()
