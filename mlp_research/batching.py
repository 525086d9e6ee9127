"""How an epoch is cut into batches and compiled calls: the same for every backend.

Numpy only, so every framework shares the exact data order: the permutation of
epoch e is a pure function of (seed, e), and the last batch may be short.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class EpochLayout:
    """How an epoch of `num_train` examples maps onto steps and compiled chunks of steps."""

    num_train: int
    batch_size: int  # global batch
    steps_per_chunk: int

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.num_train // self.batch_size)

    @property
    def chunks_per_epoch(self) -> int:
        return -(-self.steps_per_epoch // self.steps_per_chunk)

    @property
    def padded_steps(self) -> int:
        return self.chunks_per_epoch * self.steps_per_chunk

    @property
    def order_length(self) -> int:
        return self.padded_steps * self.batch_size

    def steps_done(self, chunk: int) -> int:
        """Steps of the epoch completed after chunk `chunk` (0-based)."""
        return min((chunk + 1) * self.steps_per_chunk, self.steps_per_epoch)


def make_layout(num_train: int, batch_size: int, steps_per_chunk: int) -> EpochLayout:
    steps = -(-num_train // batch_size)
    per_chunk = steps if steps_per_chunk <= 0 else min(steps_per_chunk, steps)
    return EpochLayout(num_train, batch_size, per_chunk)


def epoch_order(seed: int, epoch: int, layout: EpochLayout, data_order: str = "batches") -> np.ndarray:
    """Epoch `epoch`'s example indices, step by step: step s trains on the entries [s * B, (s + 1) * B) that are
    not -1 (the padding of a short batch, and of the order to whole chunks).

    `batches`: the training set cut once into contiguous batches of B (the last one short), visited in the
    order `permutation(steps)`; `examples`: a permutation of the examples cut into batches, the short one last.
    A pure function of (seed, epoch), drawn on the host: a resumed run, and every backend, sees the same
    batches, and no XLA compile is spent on a 2 ms job.
    """
    rng = np.random.default_rng([seed, epoch])
    n, b = layout.num_train, layout.batch_size
    if data_order == "examples":
        order = rng.permutation(n).astype(np.int32)
    elif data_order == "batches":
        batches = np.full((layout.steps_per_epoch, b), -1, np.int32)
        batches.reshape(-1)[:n] = np.arange(n, dtype=np.int32)
        order = batches[rng.permutation(layout.steps_per_epoch)].reshape(-1)
    else:
        raise ValueError(f"unknown data order {data_order!r}")
    return np.pad(order, (0, layout.order_length - len(order)), constant_values=-1)


def step_batches(order: np.ndarray, layout: EpochLayout) -> list[np.ndarray]:
    """An epoch's order as one index array per step, padding removed (for loops that take batches one by one)."""
    rows = order[: layout.steps_per_epoch * layout.batch_size].reshape(-1, layout.batch_size)
    return [row[row >= 0] for row in rows]


def step_counts(order: np.ndarray, layout: EpochLayout) -> np.ndarray:
    """Examples in each step of an epoch in `order` (the batch size, fewer in its short batch)."""
    return (order[: layout.padded_steps * layout.batch_size].reshape(-1, layout.batch_size) >= 0).sum(1)


def pad_eval(images: np.ndarray, labels: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pad to whole batches and reshape to (num_batches, batch, ...); padding has weight 0."""
    n = len(labels)
    num_batches = max(-(-n // batch), 1)
    pad = num_batches * batch - n
    weights = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
    labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
    shape = (num_batches, batch)
    return images.reshape(*shape, *images.shape[1:]), labels.reshape(shape), weights.reshape(shape)
