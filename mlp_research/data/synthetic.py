"""Deterministic Fashion-MNIST-shaped data for smoke tests.

Ten smooth class prototypes plus noise: learnable within an epoch or two, so
tests can check that training really learns, yet generated in milliseconds.
"""

from __future__ import annotations

import numpy as np

_SEED = 1234


def _prototypes(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float32) / 27.0
    protos = []
    for _ in range(10):
        cy, cx = rng.uniform(0.2, 0.8, size=2)
        sy, sx = rng.uniform(0.08, 0.3, size=2)
        protos.append(np.exp(-(((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2)))
    return np.stack(protos)


def make(num_train: int, num_test: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(train_images, train_labels), (test_images, test_labels), uint8 like the IDX files."""
    rng = np.random.default_rng(_SEED)
    protos = _prototypes(rng)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        noise = rng.normal(0.0, 0.35, size=(n, 28, 28)).astype(np.float32)
        images = np.clip(protos[labels] * 0.8 + noise * 0.5 + 0.1, 0.0, 1.0)
        return (images * 255).round().astype(np.uint8), labels

    return draw(num_train), draw(num_test)
