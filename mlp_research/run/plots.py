"""The figure of a run (curves.png), as the book draws it: train loss, val loss and val acc per epoch.

matplotlib is imported when the figure is drawn, in the main thread: importing
it in a background thread during start-up saved ~1 s, but could deadlock a run
(that thread loading a C extension and waiting for the GIL, while the main
thread held the GIL and waited for the dynamic loader, found in the test
suite). The figure is skipped with a warning where matplotlib is not installed:
it is a view of metrics.jsonl.
"""

from __future__ import annotations

from typing import Iterable

from mlp_research.files import atomic_path
from mlp_research.run.metrics import MetricsRow


def pyplot():
    """matplotlib.pyplot with the Agg backend (no display needed); ImportError where matplotlib is missing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(rows: Iterable[MetricsRow], path: str, title: str = "") -> bool:
    """Write the figure atomically; False, writing nothing, where matplotlib is not installed."""
    try:
        plt = pyplot()
    except ImportError:
        return False
    rows = list(rows)
    epochs = [r.epoch for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    try:
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
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return True
