"""What the book's `ProgressBoard` sees, recorded point by point, and the per-epoch numbers made from it.

The book reports validation accuracy as its board draws it: `Module.plot` sends one value per validation
batch and the board averages every `num_val_batches` of them, so each batch counts once whatever its size
(the test set's last batch has 16 of 10,000 examples but 1/40 of the weight). The batch sizes of the
unshuffled validation loader are known, so the example-weighted accuracy (correct / 10,000) follows
exactly from the same values. Nothing here changes what the book computes: the board is only told not to
draw (no matplotlib figure per point), which leaves its averaging untouched.
"""

from __future__ import annotations

import math
from typing import Any

Record = tuple[str, float, float]


def attach(board: Any) -> list[Record]:
    """Make `board.draw` record (label, x, y) before doing its own work, and switch its drawing off."""
    records: list[Record] = []
    original = board.draw
    board.display = False

    def draw(x: float, y: Any, label: str, every_n: int = 1) -> None:
        records.append((label, float(x), float(y)))
        original(x, y, label, every_n=every_n)

    board.draw = draw
    return records


def batch_sizes(num_examples: int, batch_size: int) -> list[int]:
    """Sizes of an unshuffled loader's batches, the last one short (10,000 / 256: 39 x 256 and 16)."""
    full, rest = divmod(num_examples, batch_size)
    return [batch_size] * full + ([rest] if rest else [])


def per_epoch(records: list[Record], val_sizes: list[int], num_epochs: int) -> list[dict[str, float]]:
    """Per epoch: the book's batch-averaged val_acc/val_loss, the example-weighted ones, the mean train loss."""
    rows = []
    for epoch in range(1, num_epochs + 1):
        acc = [y for label, x, y in records if label == "val_acc" and x == epoch]
        loss = [y for label, x, y in records if label == "val_loss" and x == epoch]
        train = [y for label, x, y in records if label == "train_loss" and epoch - 1 <= x < epoch]
        if len(acc) != len(val_sizes) or len(loss) != len(val_sizes):
            raise ValueError(f"epoch {epoch}: {len(acc)} val_acc points for {len(val_sizes)} batches")
        total = sum(val_sizes)
        correct = sum(round(a * n) for a, n in zip(acc, val_sizes))
        rows.append({
            "epoch": epoch,
            "val_acc_batch_mean": sum(acc) / len(acc),
            "val_acc_example_weighted": correct / total,
            "val_loss_batch_mean": sum(loss) / len(loss),
            "val_loss_example_weighted": sum(v * n for v, n in zip(loss, val_sizes)) / total,
            "train_loss_batch_mean": sum(train) / len(train) if train else math.nan,
        })
    return rows


def board_val_acc(board: Any) -> list[float]:
    """The val_acc line the book's board itself drew (one averaged point per epoch), to cross-check."""
    return [float(p.y) for p in getattr(board, "data", {}).get("val_acc", [])]
