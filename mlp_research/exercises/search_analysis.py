"""What a finished study says: trial records, parameter importances, interactions, and what pruning saved.

Importances come from Optuna's PED-ANOVA evaluator (its fANOVA evaluator would
need scikit-learn, which the project does not depend on): how much each
parameter decides whether a trial reaches the top quarter. Pruned trials have no final
value, so besides the complete trials' final validation accuracy the
importances are also computed on every trial's accuracy at one rung (the
latest epoch that most trials reached), which uses the whole study. The figures
are plain matplotlib, drawn from the trial records (Optuna's plotly plots are
not used).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
import optuna

from mlp_research.exercises.common import Context, save_figure
from mlp_research.exercises.common import figure as new_figure
from mlp_research.exercises.search import FINISHED, REFERENCE_LR

TOP_QUANTILE = 0.25


def records(study: optuna.Study) -> list[dict]:
    """Finished trials as plain dicts (in trial order) for tables, figures and answers."""
    out = []
    for t in study.get_trials(deepcopy=False, states=FINISHED):
        curve = [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
        out.append({"number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params),
                    "curve": curve, "epochs_trained": len(curve), "seconds": float(t.user_attrs.get("seconds", 0.0)),
                    "config": t.user_attrs.get("config", {}), "worker": t.user_attrs.get("worker"),
                    "retried_from": t.system_attrs.get("failed_trial"), "intermediate": dict(t.intermediate_values),
                    "distributions": t.distributions})
    return out


def rung(trials: Sequence[dict]) -> int:
    """The latest epoch reached by at least half of the trials (at least 1)."""
    reached = sorted((t["epochs_trained"] for t in trials), reverse=True)
    return max(1, reached[len(reached) // 2 - 1] if len(reached) >= 2 else (reached[0] if reached else 1))


def importances(trials: Sequence[dict], at_epoch: int | None) -> dict[str, float]:
    """PED-ANOVA importances of reaching the top quarter of the target: the final value (complete trials) or the
    value at `at_epoch` (every trial that got there)."""
    study = optuna.create_study(direction="maximize")
    for t in trials:
        if at_epoch is None:
            value = t["value"] if t["state"] == "COMPLETE" else None
        else:
            value = t["intermediate"].get(at_epoch)
        if value is not None and math.isfinite(value):
            study.add_trial(optuna.trial.create_trial(params=t["params"], distributions=t["distributions"],
                                                      value=float(value)))
    if len(study.trials) < 3:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(target_quantile=TOP_QUANTILE))
    return {k: float(v) for k, v in result.items()}


def grid_size(space: dict, lr_points: int = 5, wd_points: int = 3) -> int:
    """Configurations of a coarse full grid over the same space (5 learning rates, 3 weight decays)."""
    depths = space["depth_range"][1] - space["depth_range"][0] + 1
    n = (len(space["optimizers"]) * lr_points * depths * len(space["widths"]) * len(space["activations"])
         * len(space["batch_sizes"]) * len(space["schedules"]))
    return n * (wd_points if space.get("weight_decay_range") else 1)


def savings(trials: Sequence[dict], space: dict) -> dict[str, Any]:
    """Trials and epochs the study used, against the same trials unpruned and against a full grid."""
    epochs = int(space["epochs"])
    used = sum(t["epochs_trained"] for t in trials)
    seconds = sum(t["seconds"] for t in trials)
    grid = grid_size(space)
    per_epoch = seconds / used if used else float("nan")
    return {"trials": len(trials), "pruned": sum(t["state"] == "PRUNED" for t in trials), "epochs_trained": used,
            "epochs_unpruned": len(trials) * epochs, "grid_trials": grid, "grid_epochs": grid * epochs,
            "seconds": seconds, "seconds_per_epoch": per_epoch, "grid_hours": grid * epochs * per_epoch / 3600}


def best_factor_per(trials: Sequence[dict], param: str, at_epoch: int) -> dict[str, tuple[float, float]]:
    """For each value of `param`: (the learning rate of its best trial at `at_epoch`, that accuracy)."""
    best: dict[str, tuple[float, float]] = {}
    for t in trials:
        value = t["intermediate"].get(at_epoch)
        if value is None:
            continue
        key = str(t["params"][param])
        lr = REFERENCE_LR[t["params"]["optimizer"]] * t["params"]["lr_factor"]
        if key not in best or value > best[key][1]:
            best[key] = (lr, float(value))
    return best


def progress_figure(trials: Sequence[dict], ctx: Context) -> str:
    fig, axes = new_figure(2)
    for t in trials:
        axes[0].plot(range(1, len(t["curve"]) + 1), t["curve"], "-" if t["state"] == "COMPLETE" else ":", alpha=0.7)
    axes[0].set(xlabel="epoch", ylabel="val accuracy", title="Trials (dotted: pruned)")
    values = [t["curve"][-1] if t["curve"] else 0.0 for t in trials]
    best = np.maximum.accumulate([t["value"] if t["state"] == "COMPLETE" and t["value"] is not None else 0.0
                                  for t in trials]) if trials else []
    axes[1].plot([t["number"] for t in trials], values, "o", alpha=0.5, label="trial (last epoch)")
    axes[1].plot([t["number"] for t in trials], best, "-", label="best complete")
    low = min([v for v in values if v > 0.0] + [1.0])
    axes[1].set(xlabel="trial", ylabel="val accuracy", title="Search progress", ylim=(max(0.0, low - 0.02), None))
    axes[1].legend(fontsize=7)
    return save_figure(fig, ctx, "q5_search.png")


def importance_figure(final: dict[str, float], early: dict[str, float], at_epoch: int, ctx: Context) -> str:
    names = sorted(set(final) | set(early), key=lambda k: -(early.get(k, 0.0) + final.get(k, 0.0)))
    fig, (ax,) = new_figure(1, width=6.0)
    y = np.arange(len(names))
    ax.barh(y - 0.2, [early.get(n, 0.0) for n in names], 0.4, label=f"val_acc at epoch {at_epoch} (all trials)")
    ax.barh(y + 0.2, [final.get(n, 0.0) for n in names], 0.4, label="final val_acc (complete trials)")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set(xlabel="PED-ANOVA importance (sums to 1)", title="Parameter importances (reaching the top quarter)")
    ax.legend(fontsize=7)
    return save_figure(fig, ctx, "q5_importance.png")


def interaction_figure(trials: Sequence[dict], space: dict, at_epoch: int, ctx: Context) -> str:
    """lr x optimizer, width x depth and batch size x lr: how one parameter's best value moves with another."""
    reached = [t for t in trials if at_epoch in t["intermediate"]]
    acc = np.array([t["intermediate"][at_epoch] for t in reached])
    fig, axes = new_figure(3, width=4.2)
    for opt in space["optimizers"]:
        pts = [(REFERENCE_LR[opt] * t["params"]["lr_factor"], a) for t, a in zip(reached, acc)
               if t["params"]["optimizer"] == opt]
        if pts:
            axes[0].scatter(*zip(*pts), label=opt, s=18)
    axes[0].set(xscale="log", xlabel="learning rate", ylabel=f"val_acc at epoch {at_epoch}", title="lr x optimizer")
    axes[0].legend(fontsize=7)
    depths = list(range(space["depth_range"][0], space["depth_range"][1] + 1))
    widths = list(space["widths"])
    heat = np.full((len(depths), len(widths)), np.nan)
    for t, a in zip(reached, acc):
        i, j = depths.index(t["params"]["depth"]), widths.index(t["params"]["width"])
        heat[i, j] = a if np.isnan(heat[i, j]) else max(heat[i, j], a)
    axes[1].imshow(np.nan_to_num(heat, nan=np.nanmin(acc) if len(acc) else 0.0), cmap="viridis", aspect="auto")
    for i in range(len(depths)):
        for j in range(len(widths)):
            axes[1].text(j, i, "-" if np.isnan(heat[i, j]) else f"{heat[i, j]:.3f}", ha="center", va="center",
                         fontsize=7, color="w")
    axes[1].set_xticks(range(len(widths)), [str(w) for w in widths])
    axes[1].set_yticks(range(len(depths)), [str(d) for d in depths])
    axes[1].set(xlabel="width", ylabel="depth", title="best val_acc: width x depth")
    sc = axes[2].scatter([t["params"]["batch_size"] for t in reached], [t["params"]["lr_factor"] for t in reached],
                         c=acc, cmap="viridis", s=22)
    axes[2].set_xscale("log", base=2)
    axes[2].set_xticks(list(space["batch_sizes"]), [str(b) for b in space["batch_sizes"]])
    axes[2].set(yscale="log", xlabel="batch size", ylabel="lr factor", title="batch size x lr")
    fig.colorbar(sc, ax=axes[2])
    return save_figure(fig, ctx, "q5_interactions.png")
