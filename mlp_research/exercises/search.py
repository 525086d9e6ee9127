"""Joint hyperparameter search with Optuna: TPE sampling plus Hyperband pruning on validation accuracy.

Every trial trains on the training split and reports validation accuracy after
each epoch; Hyperband stops trials that trail their peers at the same epoch, so
most of the budget goes to promising configurations. The study lives in an
SQLite file in the workdir: rerunning continues it (finished trials are kept),
and a database URL instead lets many workers share it. The test split is
evaluated once, for the chosen configuration only.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from typing import Any, Callable

import jax
import numpy as np
import optuna

from mlp_research.config import Config
from mlp_research.data import Splits
from mlp_research.exercises.vmap_sweep import train_group
from mlp_research.jax_backend.models import build_model, from_canonical
from mlp_research.jax_backend import step as step_lib
from mlp_research.jax_backend.placement import pad_eval

Log = Callable[[str], None]
FINAL = "final.json"


def sample_config(trial: optuna.trial.BaseTrial, base: Config, space: dict) -> Config:
    """One point of the search space (see the q5 experiment file for its fields)."""
    optimizer = trial.suggest_categorical("optimizer", list(space["optimizers"]))
    lo, hi = space["lr_range"][optimizer]
    lr = trial.suggest_float("lr", lo, hi, log=True)
    depth = trial.suggest_int("depth", space["depth_range"][0], space["depth_range"][1])
    widths = tuple(trial.suggest_categorical(f"width_{i + 1}", list(space["widths"])) for i in range(depth))
    values: dict[str, Any] = dict(
        optimizer=optimizer, lr=lr, num_hiddens=widths,
        activation=trial.suggest_categorical("activation", list(space["activations"])),
        batch_size=trial.suggest_categorical("batch_size", list(space["batch_sizes"])),
        max_epochs=trial.suggest_categorical("max_epochs", list(space["epochs"])),
    )
    if space.get("weight_decay_range"):
        lo, hi = space["weight_decay_range"]
        values["weight_decay"] = trial.suggest_float("weight_decay", lo, hi, log=True)
    return base.replace(**values)


def grid_size(space: dict, lr_points: int = 10, wd_points: int = 5) -> int:
    """How many configurations a coarse grid over the same space would have (for the report)."""
    widths = len(space["widths"])
    depth_combos = sum(widths**d for d in range(space["depth_range"][0], space["depth_range"][1] + 1))
    n = (len(space["optimizers"]) * lr_points * depth_combos * len(space["activations"]) * len(space["batch_sizes"])
         * len(space["epochs"]))
    return n * (wd_points if space.get("weight_decay_range") else 1)


def open_study(workdir: str, name: str, seed: int, max_epochs: int, storage: str = "",
               n_startup: int = 8) -> optuna.Study:
    """The SQLite-backed (or `storage` URL) study; `n_startup` random trials before TPE models the rest."""
    os.makedirs(workdir, exist_ok=True)
    storage = storage or f"sqlite:///{os.path.abspath(os.path.join(workdir, 'study.db'))}"
    with warnings.catch_warnings():  # multivariate/group TPE is "experimental" in Optuna's terms
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup,
                                             multivariate=True, group=True)
    pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)
    return optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                               direction="maximize", load_if_exists=True)


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return [t for t in study.get_trials(deepcopy=False) if t.state in done]


def run_search(base: Config, space: dict, splits: Splits, workdir: str, n_trials: int, seed: int = 0,
               log: Log = print, storage: str = "", timeout_s: float | None = None) -> dict:
    """Run the study up to `n_trials` finished trials, then test the best once. Returns the study's record.

    `timeout_s` is the study's total budget of trial time (summed over all runs of it): a rerun
    continues only while finished trials have used less, so re-rendering a report is cheap.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    max_epochs = max(space["epochs"])
    study = open_study(workdir, "joint", seed, max_epochs, storage, n_startup=max(2, min(8, n_trials // 4)))
    for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        # A trial left RUNNING by a killed process would never finish; it does not count.
        log(f"[q5] trial {stale.number} was interrupted earlier; it is not counted")
    params_dir = os.path.join(workdir, "params")
    os.makedirs(params_dir, exist_ok=True)

    def objective(trial: optuna.Trial) -> float:
        config = sample_config(trial, base, space)
        t0 = time.perf_counter()
        trial.set_user_attr("config", json.loads(json.dumps(config.to_flat())))

        def on_epoch(epoch: int, rows: list[dict]) -> None:
            acc = rows[0]["val_acc"]
            trial.report(acc if math.isfinite(rows[0]["val_loss"]) else 0.0, epoch)
            trial.set_user_attr("epochs_trained", epoch)
            trial.set_user_attr("curve", trial.user_attrs.get("curve", []) + [acc])
            trial.set_user_attr("seconds", time.perf_counter() - t0)
            if trial.should_prune():
                log(f"[q5] trial {trial.number}: pruned after epoch {epoch} at val_acc {acc:.4f} "
                    f"({_describe(config)}, {time.perf_counter() - t0:.1f} s)")
                raise optuna.TrialPruned()

        summaries, _ = train_group([config], splits, on_epoch=on_epoch)
        s = summaries[0]
        np.savez(os.path.join(params_dir, f"trial_{trial.number}.npz"), **s["params"])
        value = s["final"]["val_acc"] if not s["diverged"] else 0.0
        log(f"[q5] trial {trial.number}: val_acc {value:.4f} after {s['final']['epoch']} epochs "
            f"({_describe(config)}, {time.perf_counter() - t0:.1f} s)")
        return value

    finished = finished_trials(study)
    remaining = n_trials - len(finished)
    time_left = None if not timeout_s else timeout_s - sum(t.user_attrs.get("seconds", 0.0) for t in finished)
    if remaining > 0 and (time_left is None or time_left > 0):
        if finished:
            log(f"[q5] continuing the study: {len(finished)} trials finished earlier")
        study.optimize(objective, n_trials=remaining, timeout=time_left, catch=())
    else:
        log(f"[q5] study already has {len(finished)} finished trials (budget used), reusing them")
    return final_record(study, base, splits, workdir, log)


def final_record(study: optuna.Study, base: Config, splits: Splits, workdir: str, log: Log) -> dict:
    """Best trial by validation accuracy, tested once on the test split (cached in final.json)."""
    best = study.best_trial
    path = os.path.join(workdir, FINAL)
    if os.path.exists(path):
        with open(path) as f:
            record = json.load(f)
        if record.get("best_trial") == best.number:
            return _with_trials(record, study)
    config = Config.from_flat(best.user_attrs["config"])
    with np.load(os.path.join(workdir, "params", f"trial_{best.number}.npz")) as z:
        params = from_canonical(config.model, {k: z[k] for k in z.files})
    test_loss, test_acc = evaluate(config, params, splits.test.images, splits.test.labels)
    log(f"[q5] best trial {best.number}: val_acc {best.value:.4f}, test_acc {test_acc:.4f} (test split used once)")
    record = {"best_trial": best.number, "best_val_acc": best.value, "test_acc": test_acc, "test_loss": test_loss,
              "best_config": best.user_attrs["config"], "best_params": best.params}
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
    return _with_trials(record, study)


def evaluate(config: Config, params: Any, images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    model = build_model(config.model, config.matmul_precision)
    data = pad_eval(images, labels, min(config.eval_batch_size, len(labels)))
    totals = jax.jit(step_lib.make_evaluate(model.apply))(params, *data)
    return jax.device_get(totals).means()


def _with_trials(record: dict, study: optuna.Study) -> dict:
    trials = []
    for t in finished_trials(study):
        trials.append({"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                       "epochs_trained": t.user_attrs.get("epochs_trained", 0), "curve": t.user_attrs.get("curve", []),
                       "max_epochs": t.params.get("max_epochs"), "seconds": t.user_attrs.get("seconds", 0.0)})
    return {**record, "trials": trials}


def _describe(config: Config) -> str:
    return (f"{config.optimizer} lr={config.lr:.2g} hiddens={list(config.model.num_hiddens)} "
            f"{config.model.activation} batch={config.batch_size} epochs={config.max_epochs}")
