"""What a finished study says: trial records, the rung most trials reached, parameter importances.

Importances come from Optuna's PED-ANOVA evaluator (its fANOVA evaluator would
need scikit-learn, which the project does not depend on): how much each
parameter decides whether a trial reaches the top quarter. Pruned trials have no
final value, so besides the complete trials' final values the importances are
also computed on every trial's value at one rung (the latest resource step that
at least half of the trials reached), which uses the whole study. Optuna's
importances cover only parameters that every trial has, so a conditional
parameter is left out of them (the table says which).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import optuna

from mlp_research.search import study as study_lib

TOP_QUANTILE = 0.25


def records(study: optuna.Study) -> list[dict]:
    """Finished trials as plain dicts (in trial order) for tables, figures and answers."""
    out = []
    for t in study.get_trials(deepcopy=False, states=study_lib.FINISHED):
        steps = sorted(t.intermediate_values)
        out.append({"number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params),
                    "steps": steps, "curve": [t.intermediate_values[s] for s in steps],
                    "intermediate": dict(t.intermediate_values),
                    "epochs_trained": int(t.user_attrs.get("epochs_trained", len(steps))),
                    "seconds": float(t.user_attrs.get("seconds", 0.0)), "config": t.user_attrs.get("config", {}),
                    "worker": t.user_attrs.get("worker"), "workdir": t.user_attrs.get("workdir", ""),
                    "retried_from": study_lib.retried_from(t), "diverged": "diverged" in t.user_attrs,
                    "distributions": t.distributions})
    return out


def rung(trials: Sequence[dict]) -> int:
    """The latest step reached by at least half of the trials (at least 1)."""
    reached = sorted((t["steps"][-1] for t in trials if t["steps"]), reverse=True)
    if not reached:
        return 1
    return max(1, reached[(len(reached) + 1) // 2 - 1])


def value_at(trial: dict, step: int) -> float | None:
    """The trial's value at the first report at or after `step` (where the pruner reads it); None if short of it."""
    later = [s for s in trial["steps"] if s >= step]
    return trial["intermediate"][later[0]] if later else None


def best(trials: Sequence[dict], direction: str) -> dict | None:
    """The best complete trial (diverged ones never win)."""
    complete = [t for t in trials if t["state"] == "COMPLETE" and not t["diverged"] and t["value"] is not None]
    if not complete:
        return None
    return (max if direction == "maximize" else min)(complete, key=lambda t: t["value"])


def ranked(trials: Sequence[dict], direction: str) -> list[dict]:
    """Complete trials, best first."""
    complete = [t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None]
    return sorted(complete, key=lambda t: t["value"], reverse=direction == "maximize")


def importances(trials: Sequence[dict], direction: str, at_step: int | None) -> dict[str, float]:
    """PED-ANOVA importances of reaching the top quarter: of the final value (complete trials) or of the value at
    `at_step` (every trial that got there)."""
    study = optuna.create_study(direction=direction)
    shared = set.intersection(*(set(t["params"]) for t in trials)) if trials else set()
    for t in trials:
        value = (t["value"] if t["state"] == "COMPLETE" else None) if at_step is None else value_at(t, at_step)
        if value is not None and math.isfinite(value):
            params = {k: v for k, v in t["params"].items() if k in shared}
            study.add_trial(optuna.trial.create_trial(
                params=params, distributions={k: t["distributions"][k] for k in params}, value=float(value)))
    if len(study.trials) < 3 or not shared:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(target_quantile=TOP_QUANTILE))
    return {k: float(v) for k, v in result.items()}


def conditional(trials: Sequence[dict]) -> list[str]:
    """Parameters that some trials lack (sampled only under a condition), which importances cannot rank."""
    names = sorted({k for t in trials for k in t["params"]})
    return [n for n in names if any(n not in t["params"] for t in trials)]


def grid_size(space: Any, points: int = 5) -> int:
    """Configurations of a coarse full grid over the same space: every choice, every integer, `points` per float."""
    n = 1
    for p in space.params:
        n *= len(p.choices) if p.choices else (int(p.high) - int(p.low) + 1 if p.kind == "int" else points)
    return n


def savings(trials: Sequence[dict], space: Any) -> dict[str, Any]:
    """Epochs the study trained against the same trials unpruned and against a coarse full grid."""
    used = sum(t["epochs_trained"] for t in trials)
    unpruned = sum(int(t["config"].get("max_epochs", 0)) for t in trials if t["config"])
    seconds = sum(t["seconds"] for t in trials)
    grid = grid_size(space)
    per_epoch = seconds / used if used else float("nan")
    mean_epochs = unpruned / len(trials) if trials else float("nan")
    return {"trials": len(trials), "pruned": sum(t["state"] == "PRUNED" for t in trials), "epochs_trained": used,
            "epochs_unpruned": unpruned, "grid_trials": grid, "grid_epochs": round(grid * mean_epochs),
            "seconds": seconds, "seconds_per_epoch": per_epoch, "grid_hours": grid * mean_epochs * per_epoch / 3600}
