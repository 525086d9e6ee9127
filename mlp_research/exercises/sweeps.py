"""Resumable grid sweeps: each trial owns `root/<name>/summary.json`; finished trials are skipped.

Pending trials that can share one compiled program (same `group_key`) train
together through `train_group` (vmapped), the rest one by one. A trial whose
stored config differs from the requested one is retrained, so editing a grid
never silently reuses stale numbers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Sequence

import numpy as np

from mlp_research.run.checkpoints import config_differences
from mlp_research.config import Config
from mlp_research.data import Splits
from mlp_research.exercises.vmap_sweep import cached_splits, group_key, train_group

SUMMARY = "summary.json"
Analyse = Callable[[Config, dict, Splits], dict]
Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Trial:
    """One point of a sweep: a directory name, its config and free-form labels for tables."""

    name: str
    config: Config
    labels: dict = dataclasses.field(default_factory=dict, hash=False, compare=False)


def read_summary(workdir: str) -> dict | None:
    path = os.path.join(workdir, SUMMARY)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_summary(workdir: str, summary: dict) -> None:
    os.makedirs(workdir, exist_ok=True)
    payload = {k: v for k, v in summary.items() if k != "params"}
    tmp = os.path.join(workdir, SUMMARY + ".tmp")
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1, default=_json_default)
    os.replace(tmp, os.path.join(workdir, SUMMARY))  # atomic: a killed sweep never leaves half a summary


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")


RESULT_NEUTRAL_FIELDS = frozenset({"progress", "compilation_cache_dir"})


def is_finished(trial: Trial, root: str, extra: dict | None = None) -> dict | None:
    """The stored summary if this exact trial already finished in `root`, else None."""
    summary = read_summary(os.path.join(root, trial.name))
    # Fields added since the summary was written count as their defaults; only settings that change
    # neither the result nor its length may differ.
    if summary is None or config_differences(summary.get("config", {}), json.loads(json.dumps(trial.config.to_flat())),
                                             ignore=RESULT_NEUTRAL_FIELDS):
        return None
    if extra is not None and summary.get("sweep_extra") != extra:
        return None
    return summary


def plan_groups(trials: Sequence[Trial], vmap: bool) -> list[list[Trial]]:
    """Pending trials grouped for training: by `group_key` when vmapping, else one per group."""
    if not vmap:
        return [[t] for t in trials]
    groups: dict[tuple, list[Trial]] = {}
    for t in trials:
        groups.setdefault(group_key(t.config), []).append(t)
    return list(groups.values())


def run_sweep(
    trials: Sequence[Trial],
    root: str,
    *,
    vmap: bool = True,
    train_subset: int = 0,
    analyse: Analyse | None = None,
    log: Log = print,
    tag: str = "",
) -> list[dict]:
    """Run every unfinished trial of `trials` under `root`; return all summaries in trial order.

    `analyse(config, summary_with_params, splits)` may add measurements that need the trained
    parameters (stored under "analysis"); `train_subset` > 0 trains on a fixed random subset of
    that many training examples. Long groups print a heartbeat line at most every 30 s.
    """
    names = [t.name for t in trials]
    if len(set(names)) != len(names):
        raise ValueError("trial names must be unique")
    extra = {"train_subset": train_subset}
    results: dict[str, dict] = {}
    pending = []
    for t in trials:
        done = is_finished(t, root, extra)
        if done is not None:
            results[t.name] = done
            log(f"[{tag}] {t.name}: finished earlier, reusing ({_brief(done)})")
        else:
            pending.append(t)
    count = len(results)
    for group in plan_groups(pending, vmap):
        splits = cached_splits(group[0].config, train_subset)
        t0 = time.perf_counter()
        names = ", ".join(t.name for t in group)
        last = [time.perf_counter()]

        def heartbeat(epoch: int, rows: list[dict], names: str = names, last: list = last) -> None:
            if time.perf_counter() - last[0] > 30:
                last[0] = time.perf_counter()
                accs = " ".join(f"{r['val_acc']:.4f}" for r in rows)
                log(f"[{tag}] {names}: epoch {epoch}, val_acc {accs}, {rows[0]['seconds']:.1f} s per epoch")

        summaries, timing = train_group([t.config for t in group], splits, on_epoch=heartbeat,
                                        vmap=vmap or len(group) > 1)
        for t, s in zip(group, summaries):
            if analyse is not None:
                s["analysis"] = analyse(t.config, s, splits)
            s["sweep_extra"] = extra
            s["labels"] = t.labels
            write_summary(os.path.join(root, t.name), s)
            s.pop("params", None)
            results[t.name] = s
            count += 1
            together = f", trained with {len(group) - 1} others in one vmapped program" if len(group) > 1 else ""
            log(f"[{tag}] {t.name} ({count}/{len(trials)}): {_brief(s)}{together}, "
                f"{time.perf_counter() - t0:.1f} s")
    return [results[t.name] for t in trials]


def _brief(summary: dict) -> str:
    final = summary["final"]
    text = f"val_acc {final['val_acc']:.4f} after {final['epoch']} epochs"
    if "test_acc" in final:
        text += f", test_acc {final['test_acc']:.4f}"
    if summary.get("diverged"):
        text += " (diverged)"
    return text
