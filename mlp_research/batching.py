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


def epoch_order(seed: int, epoch: int, layout: EpochLayout) -> np.ndarray:
    """The shuffled example indices of one epoch, padded with zeros to whole chunks.

    A pure function of (seed, epoch), so a resumed run, and every backend, sees the
    same batches. Drawn on the host: a few milliseconds, and no XLA compile (a
    device-side permutation costs ~0.5 s of compile on CPU for a 2 ms job).
    """
    perm = np.random.default_rng([seed, epoch]).permutation(layout.num_train).astype(np.int32)
    return np.pad(perm, (0, layout.order_length - layout.num_train))


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
