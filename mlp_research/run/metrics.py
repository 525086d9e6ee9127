"""The metrics row of an epoch, and where rows go: JSONL, TensorBoard, a plot.

`MetricsRow` is the single definition of what an epoch reports; every writer
and the summary derive from it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from typing import Iterable, Sequence

from mlp_research.run.tensorboard import ScalarWriter

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CURVES_FILE = "curves.png"
TENSORBOARD_DIR = "tensorboard"


@dataclasses.dataclass(frozen=True)
class MetricsRow:
    """One epoch. Losses and accuracies are means over examples."""

    epoch: int  # 1-based, as printed
    step: int  # optimiser steps taken so far
    train_loss: float
    train_acc: float
    val_loss: float  # on the split evaluated each epoch (test or validation)
    val_acc: float
    seconds: float  # wall time of this epoch's training and evaluation
    examples_per_second: float  # training examples per second this epoch

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: dict) -> "MetricsRow":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def progress_line(self, max_epochs: int) -> str:
        return (
            f"epoch {self.epoch:>3}/{max_epochs}  train_loss {self.train_loss:.4f}  train_acc {self.train_acc:.4f}  "
            f"val_loss {self.val_loss:.4f}  val_acc {self.val_acc:.4f}  "
            f"{self.examples_per_second:,.0f} ex/s  {self.seconds:.2f} s"
        )


def read_rows(workdir: str) -> list[MetricsRow]:
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [MetricsRow.from_dict(json.loads(line)) for line in f if line.strip()]


def write_rows(workdir: str, rows: Sequence[MetricsRow]) -> None:
    """Rewrite metrics.jsonl atomically with exactly `rows`."""
    path = os.path.join(workdir, METRICS_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(row.to_json() + "\n" for row in rows)
    os.replace(tmp, path)


class MetricsWriter:
    """Appends rows to metrics.jsonl (flushed each epoch) and TensorBoard."""

    def __init__(self, workdir: str, tensorboard: bool = True):
        self._jsonl = open(os.path.join(workdir, METRICS_FILE), "a")
        self._tb = ScalarWriter(os.path.join(workdir, TENSORBOARD_DIR)) if tensorboard else None

    def write(self, row: MetricsRow) -> None:
        self._jsonl.write(row.to_json() + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for name in ("train_loss", "train_acc", "val_loss", "val_acc", "examples_per_second"):
                self._tb.scalar(name, getattr(row, name), row.epoch)
            self._tb.flush()

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def _import_pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _preload() -> None:
    try:
        _import_pyplot()
    except ImportError:
        pass  # plot_curves says so


def preload_plotting() -> None:
    """Import matplotlib in a background thread (~1 s) while data load and compilation release the GIL."""
    threading.Thread(target=_preload, name="preload-matplotlib", daemon=True).start()


def plot_curves(rows: Iterable[MetricsRow], path: str, title: str = "") -> bool:
    """train loss, val loss and val acc against epoch, like the book's figure.

    Returns False, writing nothing, where matplotlib is not installed (a minimal
    environment): the figure is a view of metrics.jsonl, which holds every number.
    """
    try:
        plt = _import_pyplot()
    except ImportError:
        return False

    rows = list(rows)
    epochs = [r.epoch for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.plot(epochs, [r.train_loss for r in rows], "-", label="train_loss")
    ax.plot(epochs, [r.val_loss for r in rows], "--", label="val_loss")
    ax.plot(epochs, [r.val_acc for r in rows], "-.", label="val_acc")
    ax.set_xlabel("epoch")
    ax.set_xlim(0.5, max(epochs, default=1) + 0.5)
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def write_json(path: str, payload: dict) -> None:
    """Write JSON atomically (a crash leaves the old file, never half a file)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
