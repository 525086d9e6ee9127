"""The chapter's notebook: stored without outputs, valid, and its live curves (CI executes it in .ci/run)."""

from __future__ import annotations

import json

import pytest

from conftest import REPO
from mlp_research.run.metrics import MetricsRow

NOTEBOOK = REPO / "notebooks" / "mlp_chapter.ipynb"


def test_the_notebook_is_stored_without_outputs_and_calls_the_front_door():
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(str(NOTEBOOK), as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    source = "\n".join(c.source for c in code)
    assert "train_and_evaluate(" in source and "train_group(" in source and "experiments.train" not in source
    assert json.loads(NOTEBOOK.read_text())["metadata"]["kernelspec"]["name"] == "python3"


def _row(epoch: int, acc: float) -> MetricsRow:
    return MetricsRow(epoch=epoch, step=epoch * 10, train_loss=1.0 / epoch, train_acc=acc, val_loss=1.2 / epoch,
                      val_acc=acc, seconds=0.1, examples_per_second=1e4, lr=0.1)


class _Handle:
    """What `display(..., display_id=True)` returns in a kernel: a handle whose content can be replaced."""

    def __init__(self, shown):
        self.shown = [shown]

    def update(self, content):
        self.shown.append(content)


def test_live_curves_draw_each_member_and_do_nothing_outside_a_notebook(monkeypatch):
    display = pytest.importorskip("IPython.display")
    from mlp_research.run import live

    assert not live.in_notebook() and live.live_curves(10) is None  # pytest is a terminal: the run prints lines
    handles = []
    monkeypatch.setattr(display, "display", lambda content, display_id: handles.append(_Handle(content)) or
                        handles[-1])
    curves = live.LiveCurves(3, names=["lr=0.1", "lr=0.3"], title="t")
    for epoch in (1, 2):
        curves(epoch, [_row(epoch, 0.5 + epoch / 10), _row(epoch, 0.4)])
    assert [len(h) for h in curves.history] == [2, 2] and [len(h.shown) for h in handles] == [3, 3]
    assert curves._png().data[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'value="2" max="3"' in curves._bar_html(2).data and "lr=0.3: val_acc 0.4000" in curves._bar_html(2).data
