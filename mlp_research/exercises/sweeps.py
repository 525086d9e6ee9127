"""Resumable sweeps through the one run driver: each trial is a run in `root/<name>/`.

Pending trials that can share one compiled program (same `members.group_key`,
resuming from the same checkpoint step) train together as one vmapped group
with `driver.train_group`; a trial alone trains with `driver.train_and_evaluate`.
Either way each trial's directory holds exactly a single run's outputs
(metrics.jsonl, summary.json, checkpoints), so a killed sweep resumes from its
checkpoints and a finished trial is reused from its summary.json, without
building a trainer, when the stored config matches the requested one. A trial
whose config changed is retrained from scratch; an unreadable summary.json
means the trial is rebuilt by the driver (from its checkpoints, else anew).
`trial.json` beside the run keeps what the sweep adds: the trial's labels and
the results of `analyse` (measurements that need the trained parameters).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from typing import Callable, Sequence

from mlp_research.config import RESULT_NEUTRAL_FIELDS, Config
from mlp_research.errors import NonFiniteLossError, warn
from mlp_research.exercises.common import HEARTBEAT_SECONDS, Clock, Work, trial_gflop
from mlp_research.files import atomic_write, read_json_object
from mlp_research.run import driver
from mlp_research.run import members as members_lib
from mlp_research.run import metrics as metrics_lib
from mlp_research.run.checkpoints import config_differences
from mlp_research.run.metrics import format_duration, remaining_seconds
from mlp_research.run.workdir import CHECKPOINT_DIR

SUMMARY = metrics_lib.SUMMARY_FILE
TRIAL_FILE = "trial.json"
GROUPS_DIR = "_groups"
Analyse = Callable[[Config, dict], dict]
Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Trial:
    """One point of a sweep: a directory name, its config and free-form labels for tables."""

    name: str
    config: Config
    labels: dict = dataclasses.field(default_factory=dict, hash=False, compare=False)


def read_json(path: str) -> dict | None:
    """A JSON object from `path`; None if absent, and None with a warning if unreadable (the trial reruns)."""
    return read_json_object(path, "unreadable ({reason}); it is ignored")


def _flat(config: Config) -> dict:
    return json.loads(json.dumps(config.as_dict()))


def same_config(stored: dict, config: Config) -> bool:
    return not config_differences(stored, _flat(config), ignore=RESULT_NEUTRAL_FIELDS)


def is_finished(trial: Trial, root: str) -> dict | None:
    """The stored summary if this exact trial already finished in `root`, else None.

    Fields added to `Config` since the summary was written count as their defaults.
    """
    workdir = os.path.join(root, trial.name)
    summary = read_json(os.path.join(workdir, SUMMARY))
    if summary is not None and isinstance(summary.get("config"), dict) and same_config(summary["config"], trial.config):
        final = summary.get("final", {})
        return summary if final.get("epoch") == trial.config.max_epochs else None
    record = read_json(os.path.join(workdir, TRIAL_FILE)) or {}
    if record.get("diverged_all") and same_config(record.get("config", {}), trial.config):
        return _diverged_summary(trial, record["diverged_all"])
    return None


def load_result(trial: Trial, root: str, summary: dict) -> dict:
    """A finished trial: its summary, its history (from metrics.jsonl), labels and stored analysis."""
    workdir = os.path.join(root, trial.name)
    record = read_json(os.path.join(workdir, TRIAL_FILE)) or {}
    try:
        history = [dataclasses.asdict(r) for r in metrics_lib.read_rows(workdir)]
    except (OSError, ValueError, TypeError):
        history = []
    result = {k: v for k, v in summary.items() if k not in ("params", "rows")}
    result.update(history=history, labels=dict(trial.labels), analysis=record.get("analysis"), name=trial.name)
    return result


def _diverged_summary(trial: Trial, message: str) -> dict:
    nan = float("nan")
    return {"config": trial.config.as_dict(), "diverged": True, "first_nonfinite_step": -1, "message": message,
            "final": {"epoch": trial.config.max_epochs, "train_loss": nan, "train_acc": nan, "val_loss": nan,
                      "val_acc": nan}, "best_val_acc": nan, "num_params": trial.config.num_params(),
            "steady_epoch_seconds": nan, "total_seconds": nan, "compile_seconds": nan}


def _prepare(trial: Trial, root: str) -> None:
    """Make `root/<name>` hold this trial: a directory left by a different config is cleared first."""
    workdir = os.path.join(root, trial.name)
    stored = read_json(os.path.join(workdir, TRIAL_FILE))
    if stored is None:
        summary = read_json(os.path.join(workdir, SUMMARY)) or {}
        stored = {"config": summary["config"]} if isinstance(summary.get("config"), dict) else None
    if stored is not None and not same_config(stored.get("config", {}), trial.config) and os.path.isdir(workdir):
        diffs = config_differences(stored.get("config", {}), _flat(trial.config), ignore=RESULT_NEUTRAL_FIELDS)
        warn(f"{workdir}: the trial's config changed ({'; '.join(diffs[:3])}); retraining it from scratch")
        shutil.rmtree(workdir)
    os.makedirs(workdir, exist_ok=True)
    same = stored and same_config(stored.get("config", {}), trial.config)
    keep = {"analysis": stored.get("analysis")} if same else {}
    _write_record(workdir, {"config": trial.config.as_dict(), "labels": trial.labels, **keep})


def _write_record(workdir: str, record: dict) -> None:
    atomic_write(os.path.join(workdir, TRIAL_FILE), json.dumps(record, indent=1, default=str) + "\n")


def checkpoint_step(workdir: str) -> int:
    """The newest checkpoint step in a trial directory (0: none), so groups resume from one step."""
    try:
        steps = [int(e) for e in os.listdir(os.path.join(workdir, CHECKPOINT_DIR)) if e.isdigit()]
    except OSError:
        return 0
    return max(steps, default=0)


def plan_groups(trials: Sequence[Trial], root: str, vmap: bool = True) -> list[list[Trial]]:
    """Pending trials grouped for training: by group key and checkpoint step when vmapping, else one each."""
    if not vmap:
        return [[t] for t in trials]
    groups: dict[tuple, list[Trial]] = {}
    for t in trials:
        key = (members_lib.group_key(t.config), checkpoint_step(os.path.join(root, t.name)))
        groups.setdefault(key, []).append(t)
    return list(groups.values())


def pending(trials: Sequence[Trial], root: str, analysed: bool = False) -> list[Trial]:
    """Trials with no reusable result (with `analysed`, also finished ones whose analysis is missing)."""
    out = []
    for t in trials:
        done = is_finished(t, root)
        record = (read_json(os.path.join(root, t.name, TRIAL_FILE)) or {}) if analysed and done else {}
        if done is None or (analysed and not done.get("diverged") and record.get("analysis") is None):
            out.append(t)
    return out


def pending_work(trials: Sequence[Trial], root: str, vmap: bool = True) -> Work:
    """Work left in a sweep (GFLOP and driver runs), for the report's remaining-time estimate."""
    todo = pending(trials, root)
    return Work(sum(trial_gflop(t.config) for t in todo), len(plan_groups(todo, root, vmap)))


def run_sweep(trials: Sequence[Trial], root: str, *, log: Log = print, tag: str = "", analyse: Analyse | None = None,
              vmap: bool = True, clock: Clock | None = None) -> list[dict]:
    """Run every unfinished trial under `root`; return every trial's result in trial order.

    A result is the run's summary (without parameters) plus "history" (metrics.jsonl rows),
    "labels" and "analysis" (`analyse(config, summary_with_params)`, computed once after
    training and stored in trial.json). Long groups log a heartbeat at most every 30 s.
    """
    names = [t.name for t in trials]
    if len(set(names)) != len(names):
        raise ValueError("trial names must be unique")
    clock = clock or Clock()
    todo = {t.name for t in pending(trials, root, analysed=analyse is not None)}
    for t in trials:
        if t.name not in todo:
            log(f"[{tag}] {t.name}: finished earlier, reusing ({_brief(is_finished(t, root))})")
    queue = [t for t in trials if t.name in todo]
    count = len(trials) - len(queue)
    for group in plan_groups(queue, root, vmap):
        for t in group:
            _prepare(t, root)
        t0 = time.perf_counter()
        summaries = _train_group(group, root, log, tag, clock)
        seconds = time.perf_counter() - t0
        clock.record(tag.split()[0] if tag else "", sum(trial_gflop(t.config) for t in group), seconds)
        for t, s in zip(group, summaries):
            workdir = os.path.join(root, t.name)
            record = read_json(os.path.join(workdir, TRIAL_FILE)) or {}
            if analyse is not None and "params" in s and not s.get("diverged"):
                record["analysis"] = analyse(t.config, s)
            if s.get("message"):
                record["diverged_all"] = s["message"]
            _write_record(workdir, {**record, "config": t.config.as_dict(), "labels": t.labels})
            count += 1
            together = f", trained with {len(group) - 1} others in one vmapped program" if len(group) > 1 else ""
            log(f"[{tag}] {t.name} ({count}/{len(trials)}): {_brief(s)}{together}, {seconds:.1f} s")
    return [load_result(t, root, is_finished(t, root) or _diverged_summary(t, "no result")) for t in trials]


def group_dir(root: str, group: Sequence[Trial]) -> str:
    """The directory holding a group's group.json: named by its members, so another group never collides."""
    digest = hashlib.sha1("\n".join(sorted(t.name for t in group)).encode()).hexdigest()[:12]
    return os.path.join(root, GROUPS_DIR, digest)


def _train_group(group: Sequence[Trial], root: str, log: Log, tag: str, clock: Clock) -> list[dict]:
    """One driver call for the group; a group whose every member diverged is recorded, not raised."""
    hook = _heartbeat(group, log, tag, clock)
    try:
        if len(group) == 1:
            return [driver.train_and_evaluate(group[0].config, os.path.join(root, group[0].name), on_epoch=hook)]
        members = [members_lib.Member(t.name, t.config, os.path.join(root, t.name)) for t in group]
        return driver.train_group(members_lib.Group.of(members, group_dir(root, group)), on_epoch=hook)
    except NonFiniteLossError as e:
        log(f"[{tag}] {', '.join(t.name for t in group)}: diverged ({e})")
        return [_diverged_summary(t, str(e)) for t in group]


def _heartbeat(group: Sequence[Trial], log: Log, tag: str, clock: Clock) -> Callable[[int, list], None]:
    """An on_epoch hook that logs progress, elapsed and remaining time of the group and the report."""
    started = time.perf_counter()
    last = [started]
    seconds: list[float] = []
    config = group[0].config
    gflop = sum(trial_gflop(t.config) for t in group)
    label = group[0].name + (f" and {len(group) - 1} more" if len(group) > 1 else "")

    def hook(epoch: int, rows: list) -> None:
        seconds.append(rows[0].seconds)
        now = time.perf_counter()
        if now - last[0] < HEARTBEAT_SECONDS or epoch >= config.max_epochs:
            return
        last[0] = now
        left = remaining_seconds(seconds, config.max_epochs - epoch)
        accs = [r.val_acc for r in rows if r.val_acc == r.val_acc]
        acc = f"val_acc {min(accs):.4f}..{max(accs):.4f}" if len(accs) > 1 else (
            f"val_acc {accs[0]:.4f}" if accs else "val_acc n/a")
        log(f"[{tag}] {label}: epoch {epoch}/{config.max_epochs}, {acc}; group {format_duration(now - started)} "
            f"elapsed, ~{format_duration(left or 0.0)} left; "
            + clock.describe(Work(gflop * epoch / config.max_epochs, 1)))

    return hook


def _brief(summary: dict | None) -> str:
    if summary is None:
        return "no result"
    final = summary["final"]
    if summary.get("diverged") and final.get("val_acc") != final.get("val_acc"):
        return "diverged"
    text = f"val_acc {final['val_acc']:.4f} after {final['epoch']} epochs"
    if "test_acc" in final:
        text += f", test_acc {final['test_acc']:.4f}"
    if summary.get("diverged"):
        text += " (diverged)"
    return text
