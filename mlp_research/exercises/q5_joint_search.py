"""Q5: optimise all hyperparameters jointly; the best result; why joint search is hard.

The search (Optuna TPE + Hyperband, `search.py`) chooses on the validation
split only. The chosen configuration is then retrained from scratch on the full
training set (`--val_fraction=0`, which makes the test split the one evaluated
each epoch; nothing is chosen from it) and its last-epoch test accuracy is the
result, produced by exactly the configuration `command` spells out, so anyone
can rerun it. The search runs in `ctx.search_workers` processes sharing one study.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

import numpy as np

from mlp_research.config import Config
from mlp_research.exercises import hardware, search
from mlp_research.exercises import search_analysis as analysis
from mlp_research.exercises.common import Context, Section, Table, Work, fmt, trial_gflop
from mlp_research.exercises.search_worker import SearchError
from mlp_research.exercises.stats import Spread, pm, spread
from mlp_research.exercises.sweeps import Trial, run_sweep
from mlp_research.files import atomic_write
from mlp_research.run.summary import REPO_ROOT

TITLE = "Joint hyperparameter search"
QUESTION = ("Optimise all hyperparameters jointly. What is the best result? Why is joint search hard? Use an efficient "
            "strategy.")
DIR = "q5_joint_search"
# Every field that decides what the retraining command computes: spelled out even at their defaults,
# so a later change of a default cannot change what the published command means.
COMMAND_FIELDS = ("model", "num_hiddens", "activation", "init", "sigma", "optimizer", "lr", "momentum",
                  "weight_decay", "schedule", "warmup_epochs", "max_epochs", "batch_size", "seed", "val_fraction",
                  "train_subset", "matmul_precision")
PRUNED_SHARE_ESTIMATE = 0.4  # share of the unpruned epochs a Hyperband study trains (for the time estimate only)


@dataclasses.dataclass
class Results:
    spec: search.StudySpec
    trials: list[dict]
    best: dict
    finals: list[dict]  # the chosen configuration retrained on the full training set, one per final seed
    final_config: Config
    command: str
    at_epoch: int
    importance_final: dict
    importance_early: dict
    savings: dict
    search_seconds: float


def study_spec(cfg: dict, ctx: Context) -> search.StudySpec:
    """The study of these settings: its name hashes the space and base, so editing either starts a new study."""
    base = ctx.config(**cfg["base"])
    key = json.dumps({"space": cfg["space"], "base": search_base(base), "seed": cfg["seed"]}, sort_keys=True)
    name = "joint-" + hashlib.sha1(key.encode()).hexdigest()[:10]
    root = ctx.path(DIR, name, "")
    return search.StudySpec(storage=cfg.get("storage") or search.default_storage(root), study_name=name,
                            n_trials=int(cfg["n_trials"]), base=base.to_flat(), space=cfg["space"],
                            trials_dir=os.path.join(root, "trials"), seed=int(cfg["seed"]),
                            n_startup=int(cfg["n_startup"]), heartbeat_seconds=int(cfg.get("heartbeat_seconds", 5)),
                            grace_seconds=int(cfg.get("grace_seconds", 30)))


def search_base(base: Config) -> dict:
    """The base config without result-neutral fields (where the data lives does not make another study)."""
    flat = base.to_flat()
    return {k: v for k, v in flat.items() if k not in ("data_dir", "progress", "compilation_cache_dir")}


def final_trials(config: Config, seeds: list[int]) -> list[Trial]:
    return [Trial(f"seed_{s}", config.replace(seed=int(s)), {"seed": int(s)}) for s in seeds]


def plan(cfg: dict, ctx: Context) -> Work:
    spec = study_spec(cfg, ctx)
    base = Config.from_flat(spec.base)
    sizes = [base.replace(num_hiddens=(w,) * d, max_epochs=int(spec.space["epochs"])) for w in spec.space["widths"]
             for d in range(spec.space["depth_range"][0], spec.space["depth_range"][1] + 1)]
    mean = float(np.mean([trial_gflop(c) for c in sizes]))
    try:
        done = len(search.finished_trials(search.open_study(spec)))
    except Exception:  # noqa: BLE001 -- an unreadable study is reported when it runs, not when planned
        done = 0
    left = max(spec.n_trials - done, 0)
    return Work(left * mean * PRUNED_SHARE_ESTIMATE + mean * len(cfg["final_seeds"]), left + 1)


def run_study(spec: search.StudySpec, ctx: Context) -> float:
    """Bring the study to `n_trials` finished trials, in this process or in worker processes; returns seconds."""
    t0 = time.perf_counter()
    os.makedirs(spec.trials_dir, exist_ok=True)
    done = len(search.finished_trials(search.open_study(spec)))
    if done >= spec.n_trials:
        ctx.log(f"[q5] study {spec.study_name} already has {done} finished trials; reusing them")
        return 0.0
    ctx.log(f"[q5] study {spec.study_name}: {done} of {spec.n_trials} trials finished, "
            f"{ctx.search_workers} worker(s); " + ctx.clock.describe())
    if ctx.search_workers > 1:
        from mlp_research.exercises import search_worker

        path = os.path.join(os.path.dirname(spec.trials_dir), "study.json")
        atomic_write(path, spec.to_json())
        search_worker.launch(path, ctx.search_workers, ctx.log)
    else:
        search.run_worker(spec, 0, ctx.log)
    finished = len(search.finished_trials(search.open_study(spec)))
    if finished != spec.n_trials:
        raise SearchError(f"q5: the study has {finished} finished trials, not {spec.n_trials}; rerun to continue")
    return time.perf_counter() - t0


def measure(cfg: dict, ctx: Context) -> Results:
    spec = study_spec(cfg, ctx)
    seconds = run_study(spec, ctx)
    trials = analysis.records(search.open_study(spec))
    if seconds:
        ctx.clock.record("q5", sum(t["epochs_trained"] * trial_gflop(Config.from_flat(t["config"]))
                                   / t["config"]["max_epochs"] for t in trials if t["config"]), seconds, len(trials))
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    if not complete:
        raise SearchError("q5: no trial of the study completed (all were pruned); raise n_trials")
    best = max(complete, key=lambda t: t["value"])
    final_config = Config.from_flat(best["config"]).replace(val_fraction=0.0, test_at_end=False, data_dir=ctx.data_dir)
    finals = run_sweep(final_trials(final_config, cfg["final_seeds"]), ctx.path(DIR, spec.study_name, "final", ""),
                       log=ctx.log, tag="q5 final", clock=ctx.clock)
    at = analysis.rung(trials)
    return Results(spec, trials, best, finals, final_config.replace(seed=int(cfg["final_seeds"][0])),
                   command(final_config.replace(seed=int(cfg["final_seeds"][0])), ctx.data_dir), at,
                   analysis.importances(trials, None), analysis.importances(trials, at),
                   analysis.savings(trials, spec.space), seconds)


def command(config: Config, data_dir: str, workdir: str = "runs/q5_best") -> str:
    """The `experiments.train` command that retrains `config` from scratch (paths relative to the repository)."""
    flat = config.to_flat()
    parts = ["python -m experiments.train"]
    for name in COMMAND_FIELDS:
        value = flat[name]
        text = ",".join(map(str, value)) if name == "num_hiddens" else repr(value) if isinstance(value, float) \
            else str(value).lower() if isinstance(value, bool) else str(value)
        parts.append(f"--{name}={text}")
    if config.dataset == "synthetic":
        parts += ["--dataset=synthetic", f"--synthetic_train_size={config.synthetic_train_size}",
                  f"--synthetic_test_size={config.synthetic_test_size}"]
    elif data_dir:
        parts.append(f"--data_dir={os.path.relpath(os.path.abspath(data_dir), REPO_ROOT)}")
    parts.append(f"--workdir={workdir}")
    return " ".join(parts)


def retrain_spread(res: Results) -> Spread:
    return spread(r["final"]["val_acc"] if r.get("eval_split") == "test" else float("nan") for r in res.finals)


def answer(res: Results) -> str:
    cfg, s, test = res.best["config"], res.savings, retrain_spread(res)
    first = res.finals[0]["final"]["val_acc"]
    complete = sorted((t["value"] for t in res.trials if t["state"] == "COMPLETE"), reverse=True)
    top = complete[0] - complete[min(2, len(complete) - 1)]
    ranked = sorted(res.importance_early.items(), key=lambda kv: -kv[1])
    per_opt = analysis.best_factor_per(res.trials, "optimizer", res.at_epoch)
    share = sum(v for _, v in ranked[:3])
    rates = [lr for lr, _ in per_opt.values()]
    spread_lr = max(rates) / min(rates) if len(rates) > 1 else 1.0
    return (
        f"Chosen on validation accuracy: trial {res.best['number']}, val_acc **{res.best['value']:.4f}** "
        f"({search.describe(Config.from_flat(cfg))}, {cfg['max_epochs']} epochs). Retrained from scratch on the full "
        f"training set, seed {res.final_config.seed}: test_acc **{first:.4f}** (the test split was used for this "
        f"configuration only)" + (f"; over {test.runs} seeds {pm(test)}" if test.runs > 1 else "") + ". "
        + ("That passes 0.90 with a plain fully connected network. " if first >= 0.90 else
           f"That is {0.90 - first:.4f} short of 0.90. ")
        + f"**Efficiency**: {s['trials']} trials, {s['pruned']} stopped early by Hyperband; they trained "
        f"{s['epochs_trained']} epochs where the same trials unpruned would take {s['epochs_unpruned']} "
        f"({s['epochs_trained'] / max(s['epochs_unpruned'], 1):.0%}), and a coarse full grid over the same space "
        f"has {s['grid_trials']:,} configurations, {s['grid_epochs']:,} epochs, about {_hours(s['grid_hours'])} "
        f"here at the measured {s['seconds_per_epoch']:.1f} s per epoch. **Why joint search is hard**: "
        + (f"PED-ANOVA (which parameters decide reaching the top quarter) puts "
           f"{', '.join(f'{k} {v:.2f}' for k, v in ranked[:3])} at the top of the importances of "
           f"val_acc at epoch {res.at_epoch}"
           + (f" (together {share:.0%}), so a few parameters decide most of the outcome and a grid spends most of its "
              "budget on the others; " if share >= 0.6 else f" (together only {share:.0%}), so the outcome depends on "
              "many parameters at once; ") if ranked else "")
        + "the best learning rate found per optimiser is "
        + ", ".join(f"{o} {lr:.2g} (val_acc {v:.4f})" for o, (lr, v) in sorted(per_opt.items()))
        + (f", {spread_lr:.0f}x apart, so the rate cannot be tuned apart from the optimiser" if spread_lr >= 3 else
           (f", within {spread_lr:.1f}x of each other" if len(per_opt) > 1 else ""))
        + f"; each evaluation is a single-seed training run, and the top three complete trials span {top:.4f}"
        + ((f", less than {2 * test.std:.4f}, twice the seed spread of the chosen configuration, so the last gains "
            "cannot be told from noise." if top < 2 * test.std else f", more than twice the seed spread of the chosen "
            f"configuration ({test.std:.4f}), so the ranking of the top trials is not noise alone.")
           if test.runs > 1 else "; one seed per trial cannot tell how much of that is noise."))


def _hours(hours: float) -> str:
    return f"{hours:,.1f} hours" if hours >= 1 else f"{hours * 60:,.0f} minutes"


def headline(res: Results) -> dict:
    test = retrain_spread(res)
    return {"seeds": test.runs, "compared": "joint search (single-seed trials; final retrain over seeds)",
            "trials": len(res.trials), "pruned": res.savings["pruned"],
            "best": {"trial": res.best["number"], "val_acc": res.best["value"],
                     "test_acc": res.finals[0]["final"]["val_acc"], "test_acc_mean": test.mean,
                     "test_acc_std": test.std if test.n > 1 else None,
                     "hyperparameters": {**res.best["params"], "lr": res.final_config.lr,
                                         "num_hiddens": list(res.final_config.model.num_hiddens)},
                     "command": res.command},
            "importance": res.importance_early, "importance_epoch": res.at_epoch, "savings": res.savings}


def _data_line(base: Config) -> str:
    subset = " (a fixed subset)" if base.train_subset else ""
    return (f"{base.num_train_examples():,} {base.dataset} training examples{subset}, validation fraction "
            f"{base.val_fraction}, model {base.model.model}; the retrain uses the whole training set (val_fraction 0)"
            + (f" limited to the same subset of {base.train_subset:,}" if base.train_subset else ""))


def section(cfg: dict, ctx: Context) -> Section:
    res = measure(cfg, ctx)
    figures = [analysis.progress_figure(res.trials, ctx),
               analysis.importance_figure(res.importance_final, res.importance_early, res.at_epoch, ctx),
               analysis.interaction_figure(res.trials, res.spec.space, res.at_epoch, ctx)]
    top = sorted((t for t in res.trials if t["state"] == "COMPLETE"), key=lambda t: -t["value"])[:8]
    rows = [[t["number"], fmt(t["value"]), t["epochs_trained"],
             ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(t["params"].items()))]
            for t in top]
    s, test = res.savings, retrain_spread(res)
    summary = [[fmt(res.best["value"]), fmt(res.finals[0]["final"]["val_acc"]), pm(test), s["trials"], s["pruned"],
                s["epochs_trained"], s["epochs_unpruned"], f"{s['grid_trials']:,}", fmt(s["seconds"], 0)]]
    imp = [[k, fmt(res.importance_early.get(k, float("nan")), 3), fmt(res.importance_final.get(k, float("nan")), 3)]
           for k in sorted(set(res.importance_early) | set(res.importance_final),
                           key=lambda k: -res.importance_early.get(k, 0.0))]
    tables = [Table(["trial", "val_acc", "epochs", "parameters"], rows, "Best complete trials"),
              Table(["best val_acc", "test_acc (retrained, seed 0)", "test_acc over seeds", "trials", "pruned",
                     "epochs trained", "epochs unpruned", "grid configurations", "trial s (summed)"], summary),
              Table(["parameter", f"importance at epoch {res.at_epoch}", "importance of final val_acc"], imp,
                    "PED-ANOVA parameter importances (reaching the top quarter)")]
    setup = (f"Optuna TPE (multivariate, seed {cfg['seed']}, {cfg['n_startup']} random start-up trials) + Hyperband "
             f"(min 1 epoch, reduction 3), {res.spec.n_trials} trials in {ctx.search_workers} worker process(es); "
             f"space: {json.dumps(cfg['space'])}; every trial trains {res.spec.space['epochs']} epochs on "
             + _data_line(Config.from_flat(res.spec.base)) + f". Retrain command: `{res.command}`")
    return Section("q5", TITLE, QUESTION, tables, figures, answer(res), setup, hardware.device_label(), headline(res))

