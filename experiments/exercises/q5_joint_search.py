"""Q5: optimise all hyperparameters jointly (epochs included); a result that holds up; why joint search is hard.

Command: python -m experiments.report --data_dir=../shared/data/fashion_mnist --only=q5 [--smoke] [--search_workers=2]

Protocol, every search through `experiments.search`'s library with the space file experiments/search/q5.py:
- the whole search runs once per sampler seed (`seeds`: TPE + Hyperband, `n_trials` each) and once with random
  sampling at the same budget (same trials, same pruner): the winners' spread, how often one configuration family
  wins and the baseline say whether a search, not luck, found the result;
- the `top` configurations of the pooled reruns (by validation accuracy: no search sees the test split) are
  retrained from scratch on all 60,000 training examples with `retrain_seeds`, one vmapped program each; the chosen
  configuration is fixed before that (the best on validation), and the headline is its mean test accuracy with a
  95% confidence interval. `q5.best.command` retrains it with the seed whose accuracy is nearest that mean.
Sizing: 4 searches of 16 trials (4-12 epochs, widths to 512) and 3 x 5 retrains: about 10 minutes on a quiet
2-core CPU with --search_workers=2; --smoke (3 trials of 1-2 epochs on 2,000 examples) about a minute.
"""

from __future__ import annotations

import dataclasses
import json
import os

from ml_collections import ConfigDict

from mlp_research.config import Config
from mlp_research.errors import SearchError
from mlp_research.exercises import hardware
from mlp_research.exercises.common import Context, Section, Table, Work, deep_update, fmt, save_figure, trial_gflop
from mlp_research.exercises.common import figure as new_figure
from mlp_research.exercises.sweeps import Trial, run_sweep
from mlp_research.run.summary import REPO_ROOT
from mlp_research.search import analysis, figures, reruns, runner
from mlp_research.search.objective import describe
from mlp_research.search.report import train_command
from mlp_research.search.runner import Outcome
from mlp_research.search.space import configure, load_space, probe_params
from mlp_research.stats import Spread, interval, pm, spread


def _ci95(s: Spread) -> tuple[float, float]:
    """The t interval of a setting's mean over seeds (NaNs below two values)."""
    ci = interval(s.values)
    return ci.low, ci.high

TITLE = "Joint hyperparameter search"
QUESTION = ("Optimise all hyperparameters jointly. What is the best result? Why is joint search hard? Use an efficient "
            "strategy.")
DIR = "q5_joint_search"
# The report run's data and compilation cache, which every search trial takes over.
CONTEXT_FIELDS = ("dataset", "synthetic_train_size", "synthetic_test_size", "compilation_cache_dir",
                  "checkpoint_min_seconds")


def get_config() -> ConfigDict:
    return ConfigDict(dict(
        space="experiments/search/q5.py",
        n_trials=16,
        seeds=[0, 1, 2],  # sampler seeds of the TPE reruns
        random_seed=0,  # the random-search baseline
        top=3,
        retrain_seeds=[0, 1, 2, 3, 4],
        family=["optimizer", "depth", "width"],  # what makes two winners the same kind of configuration
        storage="",  # a database URL every search shares (default: SQLite in each search's directory)
        space_overrides={},
        smoke=dict(n_trials=3, space_overrides=dict(
            fixed=dict(train_subset=2000), sampler=dict(n_startup=1),
            params=dict(width=dict(choices=[16, 32]), max_epochs=dict(low=1, high=2)))),
    ))


@dataclasses.dataclass
class Retrained:
    """One of the top configurations: the search trial it came from, and its retrains on the full training set."""

    rank: int
    search: str
    trial: dict
    finals: list[dict]

    @property
    def test(self) -> Spread:
        return spread(r["final"]["val_acc"] if r.get("eval_split") == "test" else float("nan") for r in self.finals)


@dataclasses.dataclass
class Results:
    searches: dict[str, Outcome]  # "tpe seed S" -> the search
    baseline: Outcome  # random search at the same budget
    top: list[Retrained]
    at: int  # the rung (share of a schedule) at which importances and interactions read every trial
    importance: dict
    importance_final: dict
    winners: list[dict]
    family: list[str]
    command: str
    command_seed: int
    command_value: float

    @property
    def pooled(self) -> list[dict]:
        return [t for o in self.searches.values() for t in o.trials]


def _space_path(cfg: dict) -> str:
    return cfg["space"] if os.path.isabs(cfg["space"]) else os.path.join(REPO_ROOT, cfg["space"])


def _overrides(cfg: dict, ctx: Context, **sampler) -> dict:
    """The space as the report runs it: the config's overrides, the report's data and cache, this search's sampler."""
    flat = ctx.config().as_dict()
    return deep_update(dict(cfg.get("space_overrides") or {}),
                       {"fixed": {k: flat[k] for k in CONTEXT_FIELDS}, "sampler": sampler})


def _search(cfg: dict, ctx: Context, directory: str, **sampler) -> Outcome:
    spec, space = runner.prepare(_space_path(cfg), ctx.path(DIR, directory, ""), storage=cfg.get("storage", ""),
                                 n_trials=int(cfg["n_trials"]), overrides=_overrides(cfg, ctx, **sampler),
                                 data_dir=ctx.data_dir)
    outcome = runner.run_search(spec, space, ctx.search_workers, log=ctx.log)
    if outcome.seconds > 5:  # trained now (not reused): the report's clock learns this machine's speed
        gflop = sum(trial_gflop(Config.from_dict(t["config"])) * t["epochs_trained"] / t["config"]["max_epochs"]
                    for t in outcome.trials if t["config"])
        ctx.clock.record("q5", gflop, outcome.seconds, len(outcome.trials))
    return outcome


def plan(cfg: dict, ctx: Context) -> Work:
    space = load_space(_space_path(cfg), _overrides(cfg, ctx))
    base, low = space.base(ctx.data_dir), probe_params(space)
    high = {p.name: (p.choices[-1] if p.choices else p.high) for p in space.params if p.name in low}
    mean = (trial_gflop(configure(space, base, low)) + trial_gflop(configure(space, base, high))) / 2
    searches, trials = len(cfg["seeds"]) + 1, int(cfg["n_trials"])
    return Work(mean * (0.5 * searches * trials + int(cfg["top"]) * len(cfg["retrain_seeds"])), searches * trials + 3)


def _top(searches: dict[str, Outcome], k: int) -> list[tuple[str, dict]]:
    """The best k distinct configurations of the pooled searches, by validation accuracy."""
    pooled = [(label, t) for label, o in searches.items() for t in analysis.ranked(o.trials, o.space.direction)
              if not t["diverged"]]
    out, seen = [], set()
    for label, t in sorted(pooled, key=lambda lt: -lt[1]["value"]):
        if repr(sorted(t["params"].items())) not in seen:
            seen.add(repr(sorted(t["params"].items())))
            out.append((label, t))
    if not out:
        raise SearchError("q5: no trial of the searches completed (all were pruned); raise n_trials")
    return out[:k]


def _retrain(rank: int, label: str, trial: dict, cfg: dict, ctx: Context) -> Retrained:
    config = Config.from_dict(trial["config"]).replace(val_fraction=0.0, test_at_end=False, data_dir=ctx.data_dir)
    trials = [Trial(f"seed_{s}", config.replace(seed=int(s)), {"seed": int(s)}) for s in cfg["retrain_seeds"]]
    root = ctx.path(DIR, "retrain", f"{label.replace(' ', '_')}_trial{trial['number']}", "")
    return Retrained(rank, label, trial, run_sweep(trials, root, log=ctx.log, tag="q5 retrain", clock=ctx.clock))


def measure(cfg: dict, ctx: Context) -> Results:
    searches = {f"tpe seed {s}": _search(cfg, ctx, f"tpe_seed{s}", name="tpe", seed=int(s)) for s in cfg["seeds"]}
    baseline = _search(cfg, ctx, f"random_seed{cfg['random_seed']}", name="random", seed=int(cfg["random_seed"]))
    top = [_retrain(r + 1, label, t, cfg, ctx) for r, (label, t) in enumerate(_top(searches, int(cfg["top"])))]
    pooled = [t for o in searches.values() for t in o.trials]
    at, direction, chosen = analysis.rung(pooled), baseline.space.direction, top[0]
    values = [(r["final"]["val_acc"], r["config"]["seed"]) for r in chosen.finals if r.get("eval_split") == "test"]
    value, seed = min(values, key=lambda vs: abs(vs[0] - chosen.test.mean))  # the seed nearest the mean
    config = Config.from_dict(chosen.finals[0]["config"]).replace(seed=int(seed), data_dir=ctx.data_dir)
    return Results(searches, baseline, top, at, analysis.importances(pooled, direction, at),
                   analysis.importances(pooled, direction, None), reruns.winners(searches, cfg["family"]),
                   list(cfg["family"]), train_command(config, "runs/q5_best"), int(seed), float(value))


def _ci(s: Spread) -> str:
    low, high = _ci95(s)
    return f"{s.mean:.4f} [{low:.4f}, {high:.4f}]" if s.n > 1 else pm(s)


def tables(res: Results) -> list[Table]:
    search_rows = [[w["search"], w["trial"], fmt(w["value"]), w["epochs"], "yes" if w["random_startup"] else "no",
                    w["epochs_trained"], w["family"]]
                   for w in res.winners + reruns.winners({"random (baseline)": res.baseline}, res.family)]
    top_rows = [[r.rank, f"{r.search}, trial {r.trial['number']}", fmt(r.trial["value"]), _ci(r.test),
                 ", ".join(fmt(v) for v in r.test.values), describe(r.trial["params"])] for r in res.top]
    names = sorted(set(res.importance) | set(res.importance_final), key=lambda k: -res.importance.get(k, 0.0))
    return [Table(["search", "winner trial", "val_acc", "epochs", "a random pick", "epochs trained", "family"],
                  search_rows, "Each search's winner (TPE reruns by sampler seed; random search at the same budget)"),
            Table(["rank", "found in", "val_acc (search)", "test_acc, mean [95% CI]", "test_acc per seed", "settings"],
                  top_rows, "The top configurations retrained on all training examples, one run per seed"),
            Table(["parameter", f"importance at {res.at}% of the schedule", "importance of the final val_acc"],
                  [[n, fmt(res.importance.get(n, float("nan")), 3), fmt(res.importance_final.get(n, float("nan")), 3)]
                   for n in names], f"PED-ANOVA importances over the {len(res.pooled)} trials of the TPE searches")]


def figures_of(res: Results, ctx: Context) -> list[str]:
    pooled, at = res.pooled, res.at
    fig, (ax,) = new_figure(1, width=6.0)
    studies = {**{k: o.trials for k, o in res.searches.items()}, "random search": res.baseline.trials}
    figures.best_so_far(ax, studies, "maximize", "val_acc", res.baseline.space.n_startup,
                        {"random search": "--"})
    paths = [save_figure(fig, ctx, "q5_search.png")]
    fig, (ax,) = new_figure(1, width=6.5)
    reached = sum(analysis.value_at(t, at) is not None for t in pooled)
    figures.importance_bars(ax, {f"val_acc at {at}% of each schedule ({reached} trials)": res.importance,
                                 f"final val_acc ({sum(t['state'] == 'COMPLETE' for t in pooled)} complete trials)":
                                 res.importance_final}, "Parameter importances, the 3 TPE searches pooled")
    paths.append(save_figure(fig, ctx, "q5_importance.png"))
    fig, axes = new_figure(3, width=4.4)

    def value(t: dict) -> float | None:
        return analysis.value_at(t, at)

    label = f"val_acc at {at}% of the schedule"
    figures.scatter_by(axes[0], pooled, lambda t: t["config"]["lr"], value, "optimizer", "learning rate", label,
                       f"lr x optimizer ({reached} of {len(pooled)} trials)", log_x=True)
    figures.heatmap(axes[1], pooled, "width", "depth", value, f"best {label}: width x depth")
    complete = [t for t in pooled if t["state"] == "COMPLETE"]
    figures.scatter_by(axes[2], complete, lambda t: t["config"]["max_epochs"], lambda t: t["value"], "optimizer",
                       "epochs (the trial's schedule)", "final val_acc", f"epochs ({len(complete)} complete trials)")
    paths.append(save_figure(fig, ctx, "q5_interactions.png"))
    fig, (ax,) = new_figure(1, width=6.0)
    for r in res.top:
        low, high = _ci95(r.test)
        ax.plot([r.rank] * r.test.n, r.test.values, "o", alpha=0.5)
        ax.errorbar([r.rank + 0.15], [r.test.mean], yerr=[[r.test.mean - low], [high - r.test.mean]], fmt="ks",
                    capsize=4)
    ax.set_xticks([r.rank for r in res.top], [f"#{r.rank}" for r in res.top])
    ax.set(xlabel="configuration (rank on validation)", ylabel="test accuracy",
           title=f"Retrained on all training data: {len(res.top[0].finals)} seeds, mean and 95% CI")
    paths.append(save_figure(fig, ctx, "q5_retrain.png"))
    return paths


def answer(res: Results) -> str:
    chosen, best = res.top[0], res.top[0].trial
    test, (low, high) = res.top[0].test, _ci95(res.top[0].test)
    family, count = reruns.agreement(res.winners)
    spread_ = reruns.spread_of(res.winners)
    base = analysis.best(res.baseline.trials, "maximize")
    base_value = base["value"] if base else float("nan")
    picks = sum(w["random_startup"] for w in res.winners)
    overlap = [r.rank for r in res.top[1:] if _ci95(r.test)[1] >= low and r.test.n > 1]
    ranked = sorted(res.importance.items(), key=lambda kv: -kv[1])[:3]
    saved = analysis.savings(res.pooled, res.baseline.space)
    config = Config.from_dict(best["config"])
    n_val = round((60_000 if config.dataset == "fashion_mnist" else config.synthetic_train_size) * config.val_fraction)
    error = (best["value"] * (1 - best["value"]) / max(n_val, 1)) ** 0.5
    return (
        f"**Chosen on validation** (the best of {len(res.pooled)} trials in {len(res.searches)} TPE searches): "
        f"{chosen.search}, trial {best['number']}, val_acc {best['value']:.4f} ({describe(best['params'])}). "
        f"**Retrained from scratch on the full training set with {test.runs} seeds: test accuracy {test.mean:.4f}, "
        f"95% CI [{low:.4f}, {high:.4f}]**" + (" (passes 0.90)" if low >= 0.90 else "") + ". "
        + (f"The CIs of configurations {', '.join(f'#{r}' for r in overlap)} overlap the chosen one's: on test they "
           "cannot be told apart. " if overlap else "Its interval lies above the other top configurations'. "
           if len(res.top) > 1 else "")
        + f"**Does it hold up?** The {len(res.winners)} reruns' winners reach val_acc {spread_.get('mean', 0):.4f} "
        f"± {spread_.get('std', 0):.4f} (range {spread_.get('min', 0):.4f}-{spread_.get('max', 0):.4f}); the same "
        f"family ({family}) won {count} of {len(res.winners)} times; {picks} winner(s) came from TPE's random "
        f"start-up trials. Random search at the same budget reached {base_value:.4f}, "
        + (f"{base_value - spread_['mean']:+.4f} against the TPE winners' mean, "
           + ("inside their range: at this budget TPE did not beat random search beyond the spread between reruns. "
              if spread_["min"] <= base_value <= spread_["max"] else "above every TPE winner: in this run random "
              "search did better (one random search, so its own spread between reruns is unknown). "
              if base_value > spread_["max"] else "below every TPE winner (one random search, so its own spread "
              "between reruns is unknown). ") if spread_ else "")
        + f"**Efficiency**: Hyperband trained {saved['epochs_trained']} of the {saved['epochs_unpruned']} epochs the "
        f"same trials would take unpruned, where a coarse grid over this space has {saved['grid_trials']:,} "
        f"configurations. **Why joint search is hard**: "
        + (f"at {res.at}% of the schedule PED-ANOVA ranks " + ", ".join(f"{k} ({v:.2f})" for k, v in ranked)
           + " highest; " if ranked else "")
        + "the parameters interact (the best learning rate depends on the optimiser, the best number of epochs on "
        f"the rate and its schedule), and every evaluation is one single-seed run judged on {n_val:,} validation "
        f"examples, whose sampling error alone is about {error:.4f} at this accuracy.")


def setup(cfg: dict, res: Results) -> str:
    space = res.baseline.space
    return (f"Space `{cfg['space']}`: " + json.dumps({p.name: {k: v for k, v in p.to_dict().items() if v not in
                                                      (None, False, [], ()) and k not in ("name", "field")}
                                                      for p in space.params})
            + f"; {res.baseline.spec.n_trials} trials per search ({space.n_startup} random start-up trials for TPE; "
            f"random search with seed {space.seed} draws the same start-up trials as TPE with seed {space.seed}, so "
            "that pair differs only in how the later trials were chosen),"
            f" Hyperband (reduction {space.reduction_factor}) on each trial's share of its cosine schedule; "
            f"trials on {Config.from_dict(res.pooled[0]['config']).num_train_examples():,} examples with validation "
            f"fraction {space.fixed.get('val_fraction')}; retrains on the whole training set (val_fraction 0) with "
            f"seeds {', '.join(map(str, cfg['retrain_seeds']))}. Retrain command: `{res.command}`")


def headline(cfg: dict, res: Results) -> dict:
    space, chosen = res.baseline.space, res.top[0]
    epochs = next(p for p in space.params if p.field == "max_epochs")
    base = analysis.best(res.baseline.trials, "maximize")
    return {
        "seeds": chosen.test.n, "compared": "TPE reruns, random search, top configurations retrained over seeds",
        "space": {p.name: p.to_dict() for p in space.params},
        "epochs": {"low": epochs.low, "high": epochs.high, "in_space": True},
        "trials": res.baseline.spec.n_trials, "reruns": res.winners, "winners_val_acc": reruns.spread_of(res.winners),
        "same_family": dict(zip(("family", "count"), reruns.agreement(res.winners)), of=len(res.winners)),
        "random_baseline": {"seed": space.seed, "best_val_acc": base["value"] if base else None,
                            "trial": base["number"] if base else None,
                            "epochs_trained": sum(t["epochs_trained"] for t in res.baseline.trials)},
        "top": [{"rank": r.rank, "search": r.search, "trial": r.trial["number"], "val_acc": r.trial["value"],
                 "params": r.trial["params"], "test_acc": {"mean": r.test.mean, "ci95": list(_ci95(r.test)),
                                                            "values": list(r.test.values)}} for r in res.top],
        "best": {"search": chosen.search, "trial": chosen.trial["number"], "val_acc": chosen.trial["value"],
                 "test_acc": chosen.test.mean, "ci95": list(_ci95(chosen.test)),
                 "test_acc_values": list(chosen.test.values),
                 "seeds": [r["config"]["seed"] for r in chosen.finals], "hyperparameters": chosen.trial["params"],
                 "command": res.command, "command_seed": res.command_seed, "command_test_acc": res.command_value},
        "importance": res.importance, "importance_step_percent": res.at,
        "savings": analysis.savings(res.pooled, space)}


def summary_line(res: Results) -> tuple[str, str]:
    """The summary table's answer and evidence: the chosen configuration's test accuracy, and how it held up."""
    test, (low, high) = res.top[0].test, _ci95(res.top[0].test)
    family, count = reruns.agreement(res.winners)
    spread_ = reruns.spread_of(res.winners)
    base = analysis.best(res.baseline.trials, "maximize")
    answer_ = f"{describe(res.top[0].trial['params'])}: test accuracy {test.mean:.4f} [{low:.4f}, {high:.4f}]"
    evidence = (f"{test.runs}-seed retrain, 95% t-interval; {len(res.winners)} TPE reruns' winners val "
                f"{spread_.get('mean', float('nan')):.4f} ± {spread_.get('std', float('nan')):.4f}, same family "
                f"{count}/{len(res.winners)}; random search at equal budget "
                f"{base['value'] if base else float('nan'):.4f}")
    return answer_, evidence


def section(cfg: dict, ctx: Context) -> Section:
    res = measure(cfg, ctx)
    summary, evidence = summary_line(res)
    precision = Config.from_dict(res.pooled[0]["config"]).matmul_precision
    return Section("q5", TITLE, QUESTION, tables(res), figures_of(res, ctx), answer(res), setup(cfg, res),
                   hardware.device_label(), headline(cfg, res), summary=summary, evidence=evidence,
                   precision=precision)
