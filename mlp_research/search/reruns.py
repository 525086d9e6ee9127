"""How far one search can be trusted: the same search rerun with other sampler seeds, against random search.

A single search's winner is one draw: another sampler seed may pick another
configuration. Rerunning the whole search and comparing the winners (their values'
spread, how often the same family of configuration wins, whether a winner was one
of the sampler's random start-up trials) and comparing with random sampling at the
same budget says whether the sampler, not luck, found the result.
"""

from __future__ import annotations

import collections
from typing import Any, Sequence

import numpy as np

from mlp_research.search import analysis


def family(trial: dict, names: Sequence[str]) -> str:
    """The configuration family of a trial: the values of the parameters that define it."""
    return ", ".join(f"{n}={trial['params'].get(n)}" for n in names)


def winners(outcomes: dict[str, Any], names: Sequence[str]) -> list[dict]:
    """Each search's best complete trial: its value, parameters, family, epochs and whether TPE chose it."""
    out = []
    for label, outcome in outcomes.items():
        best = analysis.best(outcome.trials, outcome.space.direction)
        if best is None:
            continue
        startup = outcome.space.sampler == "random" or best["number"] < outcome.space.n_startup
        out.append({"search": label, "trial": best["number"], "value": best["value"], "params": best["params"],
                    "family": family(best, names), "epochs": best["config"].get("max_epochs"),
                    "random_startup": bool(startup), "epochs_trained": sum(t["epochs_trained"]
                                                                         for t in outcome.trials)})
    return out


def agreement(found: Sequence[dict]) -> tuple[str, int]:
    """The family that won most often, and how often."""
    if not found:
        return "", 0
    return collections.Counter(w["family"] for w in found).most_common(1)[0]


def spread_of(found: Sequence[dict]) -> dict[str, float]:
    values = np.array([w["value"] for w in found], dtype=float)
    if not len(values):
        return {}
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "min": float(values.min()), "max": float(values.max())}
