"""`W/search.md` and `W/search.png`: the table of trials, the best one's command, importances and the curves.

Everything here is drawn from the study's records, so a rerun of a finished
search rewrites the same report. The storage is shown redacted, and the
optuna-dashboard command names it without its password (give that as
`PGPASSWORD`, which libpq reads).
"""

from __future__ import annotations

import os
from typing import Sequence

from mlp_research.config import Config
from mlp_research.files import atomic_path, atomic_write
from mlp_research.run.summary import REPO_ROOT
from mlp_research.search import analysis
from mlp_research.search import storage as storage_lib
from mlp_research.search import study as study_lib
from mlp_research.search.objective import describe
from mlp_research.search.space import Space

REPORT_MD = "search.md"
REPORT_PNG = "search.png"
# Every field that decides what a retraining command computes: spelled out even at their defaults,
# so a later change of a default cannot change what a published command means.
COMMAND_FIELDS = ("model", "num_hiddens", "activation", "init", "sigma", "optimizer", "lr", "momentum",
                  "weight_decay", "schedule", "warmup_epochs", "max_epochs", "batch_size", "seed", "val_fraction",
                  "train_subset", "matmul_precision")


def train_command(config: Config, workdir: str) -> str:
    """The `experiments.train` command that retrains `config` from scratch (paths relative to the repository)."""
    flat = config.as_dict()
    parts = ["python -m experiments.train"]
    for name in COMMAND_FIELDS:
        value = flat[name]
        text = ",".join(map(str, value)) if name == "num_hiddens" else repr(value) if isinstance(value, float) \
            else str(value).lower() if isinstance(value, bool) else str(value)
        parts.append(f"--{name}={text}")
    if config.dataset == "synthetic":
        parts += ["--dataset=synthetic", f"--synthetic_train_size={config.synthetic_train_size}",
                  f"--synthetic_test_size={config.synthetic_test_size}"]
    elif config.data_dir:
        parts.append(f"--data_dir={os.path.relpath(os.path.abspath(config.data_dir), REPO_ROOT)}")
    parts.append(f"--workdir={workdir}")
    return " ".join(parts)


def _table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def write_report(spec: study_lib.SearchSpec, space: Space, trials: list[dict], counts: dict, seconds: float) -> str:
    """Write search.md and search.png into the workdir; returns the markdown's path."""
    at = analysis.rung(trials)
    final = analysis.importances(trials, space.direction, None)
    early = analysis.importances(trials, space.direction, at)
    draw_figure(space, trials, early, at, os.path.join(spec.workdir, REPORT_PNG))
    text = render(spec, space, trials, counts, seconds, final, early, at)
    path = os.path.join(spec.workdir, REPORT_MD)
    atomic_write(path, text)
    return path


def render(spec: study_lib.SearchSpec, space: Space, trials: list[dict], counts: dict, seconds: float,
           final: dict, early: dict, at: int) -> str:
    top = analysis.best(trials, space.direction)
    epochs = sum(t["epochs_trained"] for t in trials)
    unpruned = sum(int(t["config"].get("max_epochs", 0)) for t in trials if t["config"])
    lines = [f"# Search: {space.name}", "",
             f"Study `{spec.study_name}` in `{storage_lib.redact(spec.storage)}`; space `{spec.space_path}`; "
             f"{space.sampler} sampler (seed {space.seed}" + (f", {space.n_startup} random start-up trials"
                                                              if space.sampler == "tpe" else "") + "), "
             + (f"Hyperband pruning (reduction {space.reduction_factor}, resource: "
                f"{study_lib.resource_label(space)})" if space.pruner == "hyperband" else "no pruning")
             + f"; objective: {space.direction} {space.metric}.", "",
             f"{len(trials)} of {spec.n_trials} trials finished ({counts.get('COMPLETE', 0)} complete, "
             f"{counts.get('PRUNED', 0)} pruned; {counts.get('FAIL', 0)} failed or gave up their slot; "
             f"{sum(t['retried_from'] is not None for t in trials)} retried after their worker died); "
             f"{epochs} epochs trained where the same trials unpruned would train {unpruned}; "
             f"{seconds:.0f} s of this invocation.", ""]
    if top is not None:
        config = Config.from_dict(top["config"])
        lines += [f"**Best:** trial {top['number']}, {space.metric} **{top['value']:.4f}** "
                  f"({describe(top['params'])}), in `{top['workdir']}`. Retrain it:", "",
                  f"    {train_command(config, 'runs/search_best')}", ""]
    rows = [[t["number"], t["state"].lower() + (" (diverged)" if t["diverged"] else ""), _fmt(t["value"]),
             t["epochs_trained"], t["workdir"], describe(t["params"])]
            for t in analysis.ranked(trials, space.direction) + [t for t in trials if t["state"] != "COMPLETE"]]
    lines += [_table(["trial", "state", space.metric, "epochs", "directory", "parameters"], rows), ""]
    names = sorted(set(final) | set(early), key=lambda k: -early.get(k, 0.0))
    if names:
        lines += [f"PED-ANOVA importances (which parameters decide reaching the top quarter), of the value at "
                  f"{study_lib.step_label(space, at)} (every trial that got there) and of the final value "
                  "(complete trials):", "",
                  _table(["parameter", f"at {at}", "final"], [[n, _fmt(early.get(n)), _fmt(final.get(n))]
                                                               for n in names]), ""]
    skipped = analysis.conditional(trials)
    if skipped:
        lines += [f"Not ranked (sampled only under a condition): {', '.join(skipped)}.", ""]
    lines += [f"![search]({REPORT_PNG})", "", "See the study live: `optuna-dashboard "
              f"{storage_lib.dashboard_target(spec.storage)}` (listens on 127.0.0.1:8080).", ""]
    return "\n".join(lines)


def draw_figure(space: Space, trials: list[dict], importance: dict, at: int, path: str) -> None:
    """The trials' curves (dotted: pruned) and the importances at the rung."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for t in trials:
        axes[0].plot(t["steps"], t["curve"], "-" if t["state"] == "COMPLETE" else ":", marker=".", alpha=0.7)
    axes[0].set(xlabel=study_lib.resource_label(space), ylabel=space.metric,
                title=f"{len(trials)} trials (dotted: pruned)")
    names = sorted(importance, key=lambda k: importance[k])
    axes[1].barh(range(len(names)), [importance[n] for n in names])
    axes[1].set_yticks(range(len(names)), names)
    reached = sum(analysis.value_at(t, at) is not None for t in trials)
    axes[1].set(xlabel="PED-ANOVA importance (sums to 1)",
                title=f"Importances of {space.metric} at {study_lib.step_label(space, at)} ({reached} trials)")
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=90, format="png")
    finally:
        plt.close(fig)
