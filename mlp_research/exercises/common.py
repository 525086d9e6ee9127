"""Shared pieces of the exercise runners: the run context, a report section, small plotting helpers."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from typing import Any, Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mlp_research.config import Config  # noqa: E402

Log = Callable[[str], None]


@dataclasses.dataclass
class Context:
    """Where a report run writes, which data it uses, and how big it is."""

    workdir: str
    dataset: str = "fashion_mnist"
    data_dir: str = ""
    smoke: bool = False
    log: Log = print

    def config(self, **overrides: Any) -> Config:
        """The base config of every exercise: this run's data, no per-epoch printing."""
        values: dict[str, Any] = dict(dataset=self.dataset, data_dir=self.data_dir, progress=False)
        if self.dataset == "synthetic":
            values.update(synthetic_train_size=12_000, synthetic_test_size=2_000)
        values.update(overrides)
        return Config().replace(**values)

    def path(self, *parts: str) -> str:
        path = os.path.join(self.workdir, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path


@dataclasses.dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]]
    caption: str = ""


@dataclasses.dataclass
class Section:
    """One question's part of the report: tables, figures (relative paths), the answer and the setup."""

    qid: str
    title: str
    question: str
    tables: list[Table]
    figures: list[str]
    answer: str
    setup: str
    hardware: str


def deep_update(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = value
    return out


def load_experiment(path: str, smoke: bool) -> dict:
    """An experiment file's `get_config()` as a plain dict, with its `smoke` overrides applied if asked."""
    spec = importlib.util.spec_from_file_location(f"exercise_{os.path.basename(path)[:-3]}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.get_config()
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    smoke_overrides = cfg.pop("smoke", {}) or {}
    return deep_update(cfg, smoke_overrides) if smoke else cfg


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        if value != value:
            return "nan"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def save_figure(fig: "plt.Figure", ctx: Context, name: str) -> str:
    """Save into the workdir's figures/ folder; returns the path relative to the workdir."""
    rel = os.path.join("figures", name)
    fig.tight_layout()
    fig.savefig(ctx.path(rel), dpi=110)
    plt.close(fig)
    return rel


def figure(ncols: int = 1, width: float = 5.5, height: float = 3.8) -> tuple["plt.Figure", Sequence[Any]]:
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, list(axes[0])


def run_setup(cfg: dict, base: Config, epochs: int | None = None, subset: int = 0) -> str:
    """One line describing the fixed settings of an experiment."""
    n = subset or base.num_train_examples()
    return (f"{base.dataset} ({n:,} training examples, validation fraction {base.val_fraction}), "
            f"{base.model.model}, {base.optimizer} lr={base.lr}, {base.schedule} schedule, batch {base.batch_size}, "
            f"{epochs or base.max_epochs} epochs, seed {base.seed}")
