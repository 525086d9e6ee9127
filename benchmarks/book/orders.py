"""Data orders of one epoch, as lists of index batches: the project's and the book's, and two halves of the gap.

- `examples`: the project's (`mlp_research.batching.epoch_order`): a fresh permutation of the examples every
  epoch, cut into batches of 256, the short batch (96) always the last step before the evaluation. The book's
  PyTorch loader (`DataLoader(shuffle=True)`) does the same.
- `fixed_batches`: the book's JAX loader (`Dataset.batch(256).shuffle(235)`): the batches are contiguous runs
  of the file order, the same 235 batches every epoch, only their order reshuffled; the short batch lands
  anywhere. The project's `--data_order=batches` (its default since these measurements) is this order, drawn
  from the project's own random stream.
- `fixed_batches_short_last`: fixed batches, the short one kept last (composition without position).
- `examples_short_random`: reshuffled examples, the short batch moved to a random step (position without
  composition).
- `examples_drop_last`: reshuffled examples, the short batch dropped (`drop_last=True`; 234 steps of 256).
Numpy only; a pure function of (seed, epoch), like the project's.
"""

from __future__ import annotations

import numpy as np

from mlp_research import batching

ORDERS = ("examples", "fixed_batches", "fixed_batches_short_last", "examples_short_random", "examples_drop_last")


def _cut(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def epoch_batches(kind: str, seed: int, epoch: int, num_train: int, batch_size: int) -> list[np.ndarray]:
    """The index batches of epoch `epoch` (0-based) for data order `kind`."""
    rng = np.random.default_rng([seed, epoch, 1])  # a stream apart from the project's permutation
    if kind in ("examples", "examples_short_random", "examples_drop_last"):
        layout = batching.make_layout(num_train, batch_size, 0)
        batches = _cut(batching.epoch_order(seed, epoch, layout, "examples")[:num_train], batch_size)
        if kind == "examples_short_random" and len(batches[-1]) < batch_size:
            batches.insert(int(rng.integers(len(batches))), batches.pop())
        if kind == "examples_drop_last" and len(batches[-1]) < batch_size:
            batches.pop()
        return batches
    fixed = _cut(np.arange(num_train, dtype=np.int32), batch_size)
    if kind == "fixed_batches":
        return [fixed[i] for i in rng.permutation(len(fixed))]
    if kind == "fixed_batches_short_last":
        short = fixed.pop() if len(fixed[-1]) < batch_size else None
        return [fixed[i] for i in rng.permutation(len(fixed))] + ([short] if short is not None else [])
    raise ValueError(f"unknown data order {kind!r}; choose one of {', '.join(ORDERS)}")


def pack(batches: list[np.ndarray], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, weights), each (steps, batch_size): a short batch padded with index 0 and weight 0."""
    idx = np.zeros((len(batches), batch_size), np.int32)
    w = np.zeros((len(batches), batch_size), np.float32)
    for i, b in enumerate(batches):
        idx[i, :len(b)], w[i, :len(b)] = b, 1.0
    return idx, w
