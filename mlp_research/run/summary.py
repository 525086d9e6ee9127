"""summary.json: what a run computed, how fast, on what, with which code.

One definition of every derived figure: the training FLOPs of an example come
from `ModelSpec.train_flops_per_example` (as in the benchmarks), so
`achieved_gflops * steady_epoch_seconds / num_train` is that count.
"""

from __future__ import annotations

import functools
import os
import platform
import statistics
import subprocess
import sys
from typing import Any, Sequence

from mlp_research import hardware
from mlp_research.config import Config
from mlp_research.run.metrics import MetricsRow

# Distribution name -> module whose `__version__` says it (already imported by a run: no metadata scan).
_VERSIONED_MODULES = {"jax": "jax", "jaxlib": "jaxlib", "flax": "flax", "optax": "optax",
                      "orbax-checkpoint": "orbax.checkpoint", "numpy": "numpy"}
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for name in ("mlp-research", *_VERSIONED_MODULES):
        version = getattr(sys.modules.get(_VERSIONED_MODULES.get(name, "")), "__version__", None)
        try:
            versions[name] = version if isinstance(version, str) else md.version(name)
        except md.PackageNotFoundError:
            pass
    return versions


@functools.cache
def provenance(root: str = REPO_ROOT) -> dict[str, Any]:
    """The code version: git commit and whether the tree had uncommitted changes ("unknown" outside a checkout)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": "unknown"}
    return {"commit": commit, "dirty": dirty}


def steady_seconds(rows: Sequence[MetricsRow]) -> float:
    """Median epoch time after the first (which may compile), or the only one."""
    seconds = [r.seconds for r in rows]
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def build_summary(config: Config, rows: Sequence[MetricsRow], where: dict[str, Any], run: dict[str, Any]
                  ) -> dict[str, Any]:
    """A member's summary. `where`: the trainer's `describe()`; `run`: data, timing and process facts."""
    steady = steady_seconds(rows)
    num_train = run["num_train"]
    return {
        "config": config.as_dict(),
        "final": {k: getattr(rows[-1], k) for k in ("epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc")},
        "best_val_acc": max((r.val_acc for r in rows if r.val_acc == r.val_acc), default=float("nan")),
        "num_params": config.num_params(),
        "train_flops_per_example": config.train_flops_per_example(),
        "steady_epoch_seconds": steady,
        "examples_per_second": num_train / steady,
        "per_device_examples_per_second": num_train / steady / where["num_devices"],
        "achieved_gflops": config.train_flops_per_example() * num_train / steady / 1e9,
        "backend": config.backend,
        "parallel": where["parallel"],
        "num_devices": where["num_devices"],
        "device": {**where, "host": platform.node(), "cpu_count": os.cpu_count(),
                   "process_count": run["process_count"], "kind": where["device"], "hardware": hardware.describe()},
        "versions": library_versions(),
        "code": provenance(),
        "argv": sys.argv,
        **run,
    }


def group_summary(members: Sequence[dict[str, Any]], names: Sequence[str], axes: dict[str, list[Any]],
                  where: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """The group directory's summary: each member's result, the best one, and the group's own speed."""
    entries = []
    for name, s in zip(names, members):
        entries.append({"name": name, "final": s["final"], "best_val_acc": s["best_val_acc"],
                        "diverged": s["diverged"], "first_nonfinite_step": s["first_nonfinite_step"],
                        "config": {field: s["config"][field] for field in axes}})
    finite = [e for e in entries if not e["diverged"]]
    best = max(finite, key=lambda e: e["final"]["val_acc"]) if finite else None
    steady = members[0]["steady_epoch_seconds"]
    return {
        "group": True, "axes": axes, "members": entries, "best_member": best["name"] if best else None,
        "steady_epoch_seconds": steady, "examples_per_second": len(members) * run["num_train"] / steady,
        "achieved_gflops": sum(s["achieved_gflops"] for s in members),
        "device": where, "versions": library_versions(), "code": provenance(), "argv": sys.argv, **run,
    }
