"""Fixtures of the torch plugin's tests (the repo's tests/conftest.py is not importable from here)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from mlp_research.config import Config
from mlp_research.testing.kit import Kit

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture(scope="module")
def kit() -> Iterator[Kit]:
    """The conformance kit on the registered torch backend, shared by a module's cases."""
    kit = Kit("torch")
    yield kit
    kit.close()


@pytest.fixture
def tiny() -> Callable[..., Config]:
    """`tiny(**flat)`: a synthetic-data torch config small enough to train in about a second."""

    def make(**overrides) -> Config:
        values = dict(
            backend="torch", dataset="synthetic", synthetic_train_size=1000, synthetic_test_size=300,
            batch_size=64, max_epochs=2, progress=False, eval_batch_size=128,
        )
        values.update(overrides)
        return Config().replace(**values)

    return make
