"""Looking inside a trained one-hidden-layer network (for analyses that need more than its accuracy)."""

from __future__ import annotations

import numpy as np

from mlp_research.config import Config
from mlp_research.data import load_splits


def forward_hidden(params: dict, images: np.ndarray, activation: str) -> tuple[np.ndarray, np.ndarray]:
    """Numpy forward pass of a one-hidden-layer net in canonical parameters: (hidden activations, logits)."""
    from mlp_research.jax_backend.models import ACTIVATIONS

    x = images.reshape(len(images), -1)
    hidden = np.asarray(ACTIVATIONS[activation](x @ params["W1"] + params["b1"]))
    return hidden, hidden @ params["W2"] + params["b2"]


def eval_images(config: Config, limit: int = 0) -> np.ndarray:
    """The images of the split a run evaluates on (validation when it has one), the first `limit` if given."""
    images = load_splits(config).eval.images
    return images[:limit] if limit else images
