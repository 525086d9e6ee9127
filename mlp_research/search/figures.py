"""Figures of searches, drawn on axes the caller owns: progress against a baseline, importances, interactions.

Every panel says what it shows: which value (the final one, or the one at which
step of a trial's schedule), over how many trials, and a grid cell that no trial
sampled stays blank (labelled "not sampled"), never coloured as if measured.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np


def best_so_far(ax: Any, studies: dict[str, Sequence[dict]], direction: str, metric: str,
                n_startup: int | None = None, styles: dict[str, str] | None = None) -> None:
    """The best complete value after each trial, one line per study (e.g. TPE reruns against random search)."""
    pick = max if direction == "maximize" else min
    for label, trials in studies.items():
        done = sorted((t for t in trials if t["state"] == "COMPLETE" and not t["diverged"]), key=lambda t: t["number"])
        if not done:
            continue
        running = np.array([pick(t["value"] for t in done[:i + 1]) for i in range(len(done))])
        ax.step([t["number"] for t in done], running, where="post", label=label, ls=(styles or {}).get(label, "-"))
    if n_startup:
        ax.axvline(n_startup - 0.5, color="grey", lw=0.8, ls=":", label=f"TPE's {n_startup} random start-up trials end")
    ax.set(xlabel="trial number", ylabel=f"best complete {metric} so far", title="Search progress")
    ax.legend(fontsize=7)


def importance_bars(ax: Any, series: dict[str, dict[str, float]], title: str) -> None:
    """Horizontal bars of several importance dicts side by side (e.g. at a rung and of the final value)."""
    names = sorted({k for imp in series.values() for k in imp},
                   key=lambda k: -sum(imp.get(k, 0.0) for imp in series.values()))
    y, height = np.arange(len(names)), 0.8 / max(len(series), 1)
    for i, (label, imp) in enumerate(series.items()):
        ax.barh(y - 0.4 + (i + 0.5) * height, [imp.get(n, 0.0) for n in names], height, label=label)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set(xlabel="PED-ANOVA importance (sums to 1)", title=title)
    ax.legend(fontsize=7)


def heatmap(ax: Any, trials: Sequence[dict], x: str, y: str, value: Callable[[dict], float | None], title: str,
            direction: str = "maximize") -> None:
    """The best value per (x, y) cell of two parameters; cells no trial sampled stay blank."""
    xs = sorted({t["params"][x] for t in trials if x in t["params"]})
    ys = sorted({t["params"][y] for t in trials if y in t["params"]})
    best = np.full((len(ys), len(xs)), np.nan)
    count = np.zeros_like(best, dtype=int)
    pick = max if direction == "maximize" else min
    for t in trials:
        v = value(t)
        if v is None or x not in t["params"] or y not in t["params"]:
            continue
        i, j = ys.index(t["params"][y]), xs.index(t["params"][x])
        best[i, j] = v if np.isnan(best[i, j]) else pick(best[i, j], v)
        count[i, j] += 1
    import matplotlib

    ax.imshow(np.ma.masked_invalid(best), cmap=matplotlib.colormaps["viridis"].with_extremes(bad="white"),
              aspect="auto")
    for i in range(len(ys)):
        for j in range(len(xs)):
            text = "not\nsampled" if np.isnan(best[i, j]) else f"{best[i, j]:.3f}\n({count[i, j]} trials)"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="grey" if np.isnan(best[i, j]) else "w")
    ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.set_yticks(range(len(ys)), [str(v) for v in ys])
    ax.set(xlabel=x, ylabel=y, title=title)


def scatter_by(ax: Any, trials: Sequence[dict], x: Callable[[dict], float], value: Callable[[dict], float | None],
               group: str, xlabel: str, ylabel: str, title: str, log_x: bool = False) -> None:
    """One point per trial that has a value, coloured by a categorical parameter."""
    for key in sorted({str(t["params"].get(group)) for t in trials}):
        pts = [(x(t), value(t)) for t in trials if str(t["params"].get(group)) == key and value(t) is not None]
        if pts:
            ax.scatter(*zip(*pts), label=f"{group}={key}", s=18)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xscale="log" if log_x else "linear")
    ax.legend(fontsize=7)

