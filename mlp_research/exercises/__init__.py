"""The chapter's exercises as small modules, one per question, all training through `mlp_research.run.driver`.

Each `qN_*.py` module has `plan`, `measure`, `figure`, `answer` and `section`
(see `common.py`); `experiments/report.py` runs them and `report.py` renders
REPORT.md and report.json.
"""

from __future__ import annotations

import importlib
from types import ModuleType

QUESTIONS = {
    "q1": "q1_width", "q2": "q2_depth", "q3": "q3_single_neuron", "q4": "q4_learning_rate",
    "q5": "q5_joint_search", "q6": "q6_speed", "q7": "q7_matmul", "q8": "q8_bandwidth", "q9": "q9_activation",
    "q10": "q10_init",
}
ORDER = list(QUESTIONS)


def question(qid: str) -> ModuleType:
    """The module of question `qid` (imported on first use: q7/q8 need no training code).

    A question whose settings and logic are one module in `experiments/exercises/` (issue 21: q5 so far)
    is taken from there; the others still keep their logic here.
    """
    merged = importlib.import_module(f"experiments.exercises.{QUESTIONS[qid]}")
    if hasattr(merged, "section"):
        return merged
    return importlib.import_module(f"mlp_research.exercises.{QUESTIONS[qid]}")
