"""Q3: why a hidden layer with a single neuron is a bad idea, shown on the trained networks.

The narrow widths are trained with several seeds; for each trained network the
analysis (which needs the parameters, handed over by the driver) measures how
many classes it ever predicts, the rank of its centred logits, dead units and
the share of images whose hidden layer is all zero.
"""

from __future__ import annotations

import numpy as np

from mlp_research.config import Config
from mlp_research.data import load_splits
from mlp_research.exercises import hardware, settings
from mlp_research.exercises.common import (
    Context,
    Section,
    Table,
    Work,
    fmt,
    run_setup,
    save_figure,
)
from mlp_research.exercises.common import (
    figure as new_figure,
)
from mlp_research.exercises.settings import Setting
from mlp_research.exercises.stats import pm

TITLE = "A hidden layer with a single neuron"
QUESTION = "Why is a hidden layer with a single neuron a bad idea? Show what goes wrong."
DIR = "q3_single_neuron"


def forward_hidden(params: dict, images: np.ndarray, activation: str) -> tuple[np.ndarray, np.ndarray]:
    """Numpy forward pass of a one-hidden-layer net: (hidden activations, logits)."""
    from mlp_research.jax_backend.models import ACTIVATIONS

    x = images.reshape(len(images), -1)
    hidden = np.asarray(ACTIVATIONS[activation](x @ params["W1"] + params["b1"]))
    return hidden, hidden @ params["W2"] + params["b2"]


def bottleneck_analysis(config: Config, summary: dict) -> dict:
    """What a narrow hidden layer does to the network's outputs on the evaluation split."""
    images = load_splits(config).eval.images
    hidden, logits = forward_hidden(summary["params"], images, config.model.activation)
    sv = np.linalg.svd(logits - logits.mean(0), compute_uv=False)
    rank = int(np.sum(sv > sv[0] * 1e-2)) if sv[0] > 1e-6 else 0
    return {"distinct_predictions": int(len(np.unique(logits.argmax(-1)))), "logit_rank": rank,
            "dead_units": int(np.sum(np.all(hidden <= 0, axis=0))),
            "zero_hidden_fraction": float(np.mean(np.all(hidden <= 0, axis=1)))}


def _trials(cfg: dict, ctx: Context) -> tuple[list[int], list[list]]:
    return settings.width_trials(ctx.config(**cfg["base"]), cfg["widths"], cfg["seeds"])


def plan(cfg: dict, ctx: Context) -> Work:
    return settings.plan_seeded(_trials(cfg, ctx)[1], ctx.path(DIR, ""))


def measure(cfg: dict, ctx: Context) -> list[Setting]:
    widths, per_width = _trials(cfg, ctx)
    return settings.measure_seeded([str(w) for w in widths], per_width, widths, ctx, ctx.path(DIR, ""), "q3",
                                   analyse=bottleneck_analysis)


def _mean(s: Setting, key: str) -> float:
    values = [r["analysis"][key] for r in s.results if r.get("analysis")]
    return float(np.mean(values)) if values else float("nan")


def figure(results: list[Setting], ctx: Context) -> list[str]:
    fig, axes = new_figure(2)
    widths = [s.value for s in results]
    settings.error_bars(axes[0], widths, results, "val_acc", "mean ± std")
    for s in results:
        axes[0].scatter([s.value] * s.val.n, s.val.values, color="gray", s=12, zorder=3)
    axes[0].set_xscale("log", base=2)
    axes[0].set(xlabel="num_hiddens", ylabel="val accuracy", title="Narrow hidden layers (dots: seeds)")
    axes[1].bar([str(w) for w in widths], [_mean(s, "distinct_predictions") for s in results])
    axes[1].set(xlabel="num_hiddens", ylabel="classes ever predicted (of 10)", title="Predicted classes (mean)")
    return [save_figure(fig, ctx, "q3_single_neuron.png")]


def answer(results: list[Setting]) -> str:
    one, wide = results[0], results[-1]
    ranks = [r["analysis"]["logit_rank"] for r in one.results if r.get("analysis")]
    dead = sum(1 for r in one.results if r.get("analysis") and r["analysis"]["dead_units"] == one.value)
    return (
        f"With {one.value} hidden unit(s) validation accuracy is {pm(one.val)} over {one.seeds} seeds (range "
        f"{min(one.val.values, default=float('nan')):.4f}-{max(one.val.values, default=float('nan')):.4f}), against "
        f"{pm(wide.val)} with {wide.value}. The reason is a bottleneck: every logit is an affine function of "
        f"{one.value} number(s), so the centred logits have rank at most {max(ranks, default=0)} (10 classes need up "
        f"to 9 directions) and the net predicts only {_mean(one, 'distinct_predictions'):.1f} of the 10 classes on "
        f"average: as the single feature grows, the argmax can only walk along one line through the classes. ReLU "
        f"makes it worse: on {_mean(one, 'zero_hidden_fraction'):.0%} of the validation images the hidden layer "
        f"outputs 0, so those images all get the same prediction and no gradient, and {dead} of {one.seeds} seeds "
        f"ended with every unit dead on every image.")


def section(cfg: dict, ctx: Context) -> Section:
    results = measure(cfg, ctx)
    rows = []
    for s in results:
        for r in s.results:
            a = r.get("analysis") or {}
            rows.append([s.value, r["labels"]["seed"], fmt(r["final"]["train_loss"]), fmt(r["final"]["val_acc"]),
                         a.get("distinct_predictions", "-"), a.get("logit_rank", "-"), a.get("dead_units", "-"),
                         fmt(a.get("zero_hidden_fraction", float("nan")), 3)])
    table = Table(["width", "seed", "train_loss", "val_acc", "classes predicted", "logit rank", "dead units",
                   "images with all-zero hidden"], rows)
    base = ctx.config(**cfg["base"])
    one = results[0]
    headline = {"seeds": one.seeds, "compared": "num_hiddens", "narrowest": one.value,
                "val_acc": {"mean": one.val.mean, "std": one.val.std},
                "classes_predicted_mean": _mean(one, "distinct_predictions")}
    return Section("q3", TITLE, QUESTION, [table], figure(results, ctx), answer(results),
                   run_setup(base, seeds=cfg["seeds"]), hardware.device_label(), headline)
