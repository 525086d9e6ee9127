"""Training curves that redraw every epoch in a notebook, as the book's own board does.

`live_curves()` returns an `on_epoch` hook for the front door
(`train_and_evaluate(..., on_epoch=live_curves())`). In a Jupyter kernel it
keeps one figure (training loss, validation loss and accuracy per epoch, one
line per member of a group) and a progress bar in the cell's output and
replaces them after each epoch. Anywhere else it does nothing: a terminal has
the run's own progress lines. Rendering is matplotlib's Agg to a PNG, so it
needs no widget extension and survives a notebook executed without a browser.
"""

from __future__ import annotations

import html
import io
from typing import Any, Callable, Sequence

from mlp_research.run.metrics import MetricsRow
from mlp_research.run.plots import pyplot

Hook = Callable[[int, Sequence[MetricsRow]], None]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where display() renders in a cell), False in a terminal or a script."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


class LiveCurves:
    """The `on_epoch` hook: keeps every member's rows and redraws the figure and the progress bar."""

    def __init__(self, max_epochs: int, names: Sequence[str] = ("",), title: str = ""):
        from IPython.display import display

        self.max_epochs, self.names, self.title = max_epochs, list(names), title
        self.history: list[list[MetricsRow]] = [[] for _ in self.names]
        self._bar = display(self._bar_html(0), display_id=True)
        self._figure = display(self._bar_html(0, "waiting for the first epoch"), display_id=True)

    def __call__(self, epoch: int, rows: Sequence[MetricsRow]) -> None:
        for history, row in zip(self.history, rows):
            history.append(row)
        self._bar.update(self._bar_html(epoch))
        self._figure.update(self._png())

    def _bar_html(self, epoch: int, note: str = "") -> Any:
        from IPython.display import HTML

        last = [h[-1] for h in self.history if h]
        text = note or "  ".join(f"{name + ': ' if name else ''}val_acc {r.val_acc:.4f}"
                                 for name, r in zip(self.names, last))
        return HTML(f'<progress value="{epoch}" max="{self.max_epochs}" style="width: 40%"></progress> '
                    f"epoch {epoch}/{self.max_epochs} &nbsp; {html.escape(text)}")

    def _png(self) -> Any:
        from IPython.display import Image

        plt = pyplot()

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        for k, (name, history) in enumerate(zip(self.names, self.history)):
            epochs, color = [r.epoch for r in history], f"C{k}"  # one colour per member: solid train, dashed val
            label = f"{name} " if name else ""
            axes[0].plot(epochs, [r.train_loss for r in history], color=color, label=f"{label}train loss")
            axes[0].plot(epochs, [r.val_loss for r in history], "--", color=color, label=f"{label}val loss")
            axes[1].plot(epochs, [r.val_acc for r in history], color=color, label=f"{label}val acc")
        for ax, what in zip(axes, ("loss", "accuracy")):
            ax.set_xlabel("epoch")
            ax.set_ylabel(what)
            ax.set_xlim(1, max(self.max_epochs, 2))
            ax.legend(fontsize=7)
        fig.suptitle(self.title, fontsize=9)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90)
        plt.close(fig)
        return Image(buffer.getvalue())


def live_curves(max_epochs: int, names: Sequence[str] = ("",), title: str = "") -> Hook | None:
    """An `on_epoch` hook drawing live curves in a notebook; None elsewhere (the run prints its lines)."""
    return LiveCurves(max_epochs, names, title) if in_notebook() else None
