"""The chapter's exercises, one module per question; `python -m experiments.report` runs them.

A question module `qN_name.py` provides, with the reusable parts in `mlp_research.exercises`:

- `get_config()`: its settings (a ConfigDict or dict) with a `smoke` entry, the CI size;
- `plan(cfg, ctx)`: a `plan.Plan` (its training trials and the seconds of its timings) for the report's clock and
  `--estimate` (a `common.Work` of pending work is also accepted);
- `section(cfg, ctx)`: measure (or reuse), draw and answer, returned as a `common.Section` whose `summary`,
  `evidence` and `precision` fill the report's summary table.

A module that keeps only `get_config()` here has its logic in `mlp_research.exercises.<same name>`
(`question` looks there); every question is one module today.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from mlp_research.exercises.common import deep_update

# qid -> module: a name here, or a dotted path for a question kept elsewhere (e.g. "experiments.search.q5").
QUESTIONS = {
    "q1": "q1_width", "q2": "q2_depth", "q3": "q3_single_neuron", "q4": "q4_learning_rate",
    "q5": "q5_joint_search", "q6": "q6_speed", "q7": "q7_matmul", "q8": "q8_bandwidth", "q9": "q9_activation",
    "q10": "q10_init",
}
ORDER = list(QUESTIONS)


def settings_module(qid: str) -> ModuleType:
    name = QUESTIONS[qid]
    return importlib.import_module(name if "." in name else f"{__name__}.{name}")


def question(qid: str) -> ModuleType:
    """The module that plans and answers question `qid`."""
    module = settings_module(qid)
    if hasattr(module, "section"):
        return module
    return importlib.import_module(f"mlp_research.exercises.{QUESTIONS[qid].rsplit('.', 1)[-1]}")


def settings(qid: str, smoke: bool = False) -> dict:
    """A question's settings as a plain dict, with its `smoke` overrides applied if asked."""
    cfg = settings_module(qid).get_config()
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    smoke_overrides = cfg.pop("smoke", {}) or {}
    return deep_update(cfg, smoke_overrides) if smoke else cfg
