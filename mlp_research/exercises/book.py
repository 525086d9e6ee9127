"""The book comparison's section: the chapter's code as the book ships it against this project's default.

The measurements come from the book harness (benchmarks/book/), which stores
its results as JSON: `book.<framework>.<model>.{book,project}` with `runs` (the
final test accuracies, or their count), `mean`, `std` and `ci95`, and
`factors`, each factor tried with its measured effect. This module only reads
and renders that file; `experiments.report --book=PATH` names it, and without
the flag the harness's fixed result path is used when it exists.
"""

from __future__ import annotations

import math
import os
from typing import Any

from mlp_research import stats
from mlp_research.errors import ConfigError
from mlp_research.exercises.common import Section, Table, fmt
from mlp_research.files import read_json_object
from mlp_research.run.summary import REPO_ROOT

DEFAULT_PATH = os.path.join("benchmarks", "book", "results", "book.json")
SIDES = ("book", "project")
TITLE = "The chapter's default against the book's own code"
QUESTION = ("Does the project's default (784-256-10, SGD 0.1, batch 256, 10 epochs) reach what the book's own code "
            "reaches on the same files, and where it does not, what causes the difference?")


def find(path: str = "") -> str | None:
    """The results file to render: `path` if given (it must exist), else the harness's default path if present."""
    if path:
        if not os.path.isfile(path):
            raise ConfigError(f"--book: {path} is not a file")
        return path
    default = os.path.join(REPO_ROOT, DEFAULT_PATH)
    return default if os.path.isfile(default) else None


def load(path: str) -> dict:
    data = read_json_object(path, "unreadable ({reason})")
    if not data:
        raise ConfigError(f"--book: {path} holds no JSON object")
    data = data.get("book", data) if isinstance(data.get("book"), dict) else data
    if not comparisons(data):
        raise ConfigError(f"--book: {path} has no <framework>.<model>.{{book,project}} entries")
    return data


def comparisons(data: dict) -> list[tuple[str, str, dict]]:
    """(framework, model, {book, project}) for every entry that has both sides."""
    out = []
    for framework, models in data.items():
        if framework == "factors" or not isinstance(models, dict):
            continue
        for model, sides in models.items():
            if isinstance(sides, dict) and all(isinstance(sides.get(s), dict) for s in SIDES):
                out.append((framework, model, sides))
    return out


def _side(side: dict) -> tuple[int, float, float, list[float]]:
    """(runs, mean, std, [low, high]) of one side, the interval computed from the runs when not given."""
    runs = side.get("runs")
    values = [float(v) for v in runs] if isinstance(runs, list) else []
    ci = stats.interval(values) if values else None
    n = len(values) if values else int(runs or 0)
    mean = float(side.get("mean", ci.mean if ci else math.nan))
    std = float(side.get("std", ci.std if ci else math.nan))
    low, high = side.get("ci95") or ([ci.low, ci.high] if ci else [math.nan, math.nan])
    return n, mean, std, [float(low), float(high)]


def _verdict(framework: str, model: str, sides: dict) -> str:
    _, book_mean, _, (lo, hi) = _side(sides["book"])
    mean = _side(sides["project"])[1]
    return (f"{framework} {model}: the project's mean {mean:.4f} is {'inside' if lo <= mean <= hi else 'outside'} "
            f"the book's 95% interval [{lo:.4f}, {hi:.4f}] (book mean {book_mean:.4f}, difference "
            f"{mean - book_mean:+.4f})")


def _factor_rows(factors: Any) -> tuple[list[str], list[list[Any]]]:
    """Factors as a table: a dict of name -> fields, or a list of dicts with a 'factor' (or 'name') key."""
    items = list(factors.items()) if isinstance(factors, dict) else [
        (f.get("factor", f.get("name", "?")), f) for f in factors or [] if isinstance(f, dict)]
    keys: list[str] = []
    for _, fields in items:
        keys += [k for k in (fields if isinstance(fields, dict) else {}) if k not in ("factor", "name") + tuple(keys)]
    rows = [[name] + [_cell(fields.get(k)) if isinstance(fields, dict) else _cell(fields) for k in keys]
            for name, fields in items]
    return ["factor", *keys], rows


def _cell(value: Any) -> Any:
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return f"[{value[0]:.4f}, {value[1]:.4f}]"
    return value if value is not None else "-"


def section(data: dict, path: str) -> Section:
    rows = []
    for framework, model, sides in comparisons(data):
        for side in SIDES:
            n, mean, std, (lo, hi) = _side(sides[side])
            rows.append([framework, model, side, n, fmt(mean), fmt(std), f"[{lo:.4f}, {hi:.4f}]"])
    tables = [Table(["framework", "model", "code", "runs", "mean test acc", "std", "95% interval"], rows,
                    "Final test accuracy over runs")]
    if data.get("factors"):
        headers, factor_rows = _factor_rows(data["factors"])
        tables.append(Table(headers, factor_rows, "Factors tried one at a time, each with its measured effect"))
    verdicts = [_verdict(f, m, s) for f, m, s in comparisons(data)]
    inside = sum(" inside " in v for v in verdicts)
    meta = {k: v for k, v in data.items() if not isinstance(v, (dict, list))}
    return Section("book", TITLE, QUESTION, tables, [], "; ".join(verdicts) + ".",
                   f"measured by the book harness, stored in `{_relative(path)}`"
                   + (": " + ", ".join(f"{k} {v}" for k, v in meta.items()) if meta else ""),
                   str(meta.get("machine", "as stored with the results")), data,
                   summary=f"the project's mean is inside the book's 95% interval in {inside} of {len(verdicts)} "
                           "comparisons", evidence="; ".join(_evidence(f, m, s) for f, m, s in comparisons(data)))


def _evidence(framework: str, model: str, sides: dict) -> str:
    _, book_mean, _, (lo, hi) = _side(sides["book"])
    return f"{framework} {model}: {_side(sides['project'])[1]:.4f} vs {book_mean:.4f} [{lo:.4f}, {hi:.4f}]"


def _relative(path: str) -> str:
    return os.path.relpath(os.path.abspath(path), REPO_ROOT)
