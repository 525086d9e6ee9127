"""Sums over examples, and an epoch's training sums kept the same way in every framework.

An epoch's metrics are sums over examples (a mean of batch means would
overweight a short last batch). A trainer returns, for each chunk of steps it
trains, every step's loss sum and correct count as framework arrays, without
waiting for the device; `EpochSums` keeps them with the sums a mid-epoch
checkpoint carried in, fetches them in one go when the driver asks, and finds
the first step whose loss was not finite. One implementation serves every
backend and every member of a vmapped group.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Sums:
    """Running sums over examples: what an epoch, a chunk or an evaluation reports.

    The JAX backend registers this class as a pytree, so the same class holds
    device arrays inside compiled code and Python numbers on the host.
    """

    loss_sum: Any
    correct: Any
    count: Any
    first_nonfinite_step: Any = -1

    def means(self) -> tuple[float, float]:
        """(mean loss, accuracy) over the counted examples."""
        count = max(int(self.count), 1)
        return float(self.loss_sum) / count, int(self.correct) / count

    def to_host(self) -> "Sums":
        return Sums(float(self.loss_sum), int(self.correct), int(self.count), int(self.first_nonfinite_step))


class EpochSums:
    """The training sums of one epoch: carried in by a resume, plus every chunk trained in this process.

    `counts` are the examples of each step of the epoch (`batching.step_counts`); `fetch` turns a list of
    framework arrays into numpy arrays in one transfer (e.g. `jax.device_get`, or `[t.cpu().numpy() ...]`).
    """

    def __init__(self, counts: np.ndarray, carried: Sums | None, fetch: Callable[[list[Any]], Sequence[Any]]):
        self.counts = np.asarray(counts, np.int64)
        self.carried = carried or Sums(0.0, 0, 0)
        self.fetch = fetch
        self.chunks: list[tuple[int, int, int]] = []  # (step counter, first, end) of each chunk trained
        self.values: list[Any] = []  # each chunk's per-step loss sums and correct counts, framework values

    def add(self, counter: int, first: int, end: int, losses: Any, correct: Any) -> None:
        """Steps [first, end) of the epoch, trained from step counter `counter` on."""
        self.chunks.append((counter, first, end))
        self.values += [losses, correct]

    def total(self) -> Sums:
        """The carried sums plus every chunk's (waits for the device once)."""
        if not self.chunks:
            return self.carried.to_host()
        values = self.fetch(self.values)
        loss_sum, correct, count = float(self.carried.loss_sum), int(self.carried.correct), int(self.carried.count)
        first_bad = int(self.carried.first_nonfinite_step)
        for k, (counter, first, end) in enumerate(self.chunks):
            losses = np.asarray(values[2 * k], np.float64).reshape(-1)[: end - first]
            hits = np.asarray(values[2 * k + 1]).reshape(-1)[: end - first]
            bad = np.flatnonzero(~np.isfinite(losses))
            if first_bad < 0 and len(bad):
                first_bad = counter + int(bad[0])
            loss_sum += float(losses.sum())
            correct += int(hits.sum())
            count += int(self.counts[first:end].sum())
        return Sums(loss_sum, correct, count, first_bad)
