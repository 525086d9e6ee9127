"""The book comparison's section: the chapter's code as the book ships it against this project's default.

The measurements come from the book harness (benchmarks/book/), which stores
them as JSON (`python -m benchmarks.book.results --json`):
`<framework>.<model>.{book,project,project_examples}` with `runs` (final test
accuracies, correct / 10,000 on both sides), `mean`, `std`, `ci95` and
per-epoch `curves`; the book side names its loader's `data_order`; `factors`
holds each factor tried one at a time with its measured effect, and
`harness_fidelity`/`residuals` check the harness. This module only reads and
renders that file (tables, the curves figure, the verdicts); `experiments.report
--book=PATH` names it, and without the flag the harness's result path is used
when it exists.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterator

from mlp_research import stats
from mlp_research.errors import ConfigError
from mlp_research.exercises.common import Context, Section, Table, figure, fmt, save_figure
from mlp_research.exercises.compare import ALPHA, MARGIN
from mlp_research.files import read_json_object
from mlp_research.run.summary import REPO_ROOT

DEFAULT_PATH = os.path.join("benchmarks", "book", "results", "book.json")
SIDES = ("book", "project")
LABELS = {"book": "the book's code", "project": "project, --data_order=batches (default)",
          "project_examples": "project, --data_order=examples"}
NOT_FRAMEWORKS = ("factors", "harness_fidelity", "residuals")
TITLE = "The chapter's default against the book's own code"
QUESTION = ("Does the project's default (784-256-10, SGD 0.1, batch 256, 10 epochs) reach what the book's own code "
            "reaches on the same files, and where it does not, what causes the difference?")
SETUP = ("the book's code (d2l 1.0.3 from PyPI, the chapter's MLPScratch and MLP, in its own environment: "
         "benchmarks/book/setup.sh) and the project's default, 10 runs each (seeds 0-9), on the same IDX files; "
         "statistic: correct / 10,000 on the test split after the last epoch (the book prints the mean of its 40 "
         "batch accuracies instead: `board` in report.json); factors: the project's code with one choice of the "
         "book's changed at a time (benchmarks/book/conditions.py), 10-30 runs per side")


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
    """(framework, model, sides) for every entry that has both the book's and the project's runs."""
    out = []
    for framework, models in data.items():
        if framework in NOT_FRAMEWORKS or not isinstance(models, dict):
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


def _effect(entry: Any) -> str:
    """'+0.0108 [+0.0063, +0.0153]' for a factor's per-model entry, '' when it has none."""
    effect = entry.get("effect") if isinstance(entry, dict) else None
    if not isinstance(effect, dict):
        return ""
    low, high = effect["ci95"]
    return f"{effect['effect']:+.4f} [{low:+.4f}, {high:+.4f}]"


def _verdict(framework: str, model: str, sides: dict, factors: dict) -> tuple[str, str, bool]:
    """(sentence, status, shown equivalent): the default inside or outside the book's interval; where outside,
    the project in the book's loader order (status "explained" when that lands inside) and the data-order
    factor's measured effect."""
    _, book_mean, _, (lo, hi) = _side(sides["book"])
    mean = _side(sides["project"])[1]
    inside = lo <= mean <= hi
    difference, equivalent = _difference(sides["project"], sides["book"])
    text = (f"{framework} {model}: the project's default {mean:.4f} is {'inside' if inside else 'outside'} the "
            f"book's 95% interval [{lo:.4f}, {hi:.4f}] (book {book_mean:.4f}, difference {difference})")
    order = sides["book"].get("data_order")
    same_order = sides.get(f"project_{order}") if order and order != "batches" else None
    if inside or not isinstance(same_order, dict):
        return text, "inside" if inside else "outside", equivalent
    other = _side(same_order)[1]
    explained = lo <= other <= hi
    text += (f"; in the book's {framework} loader's order (--data_order={order}) the project gives {other:.4f}, "
             f"{'inside' if explained else 'outside'} it")
    effect = _effect(factors.get("data_order", {}).get(model))
    text += f" (the data order's measured effect: {effect}, see the factors)" if effect else ""
    return text, "explained" if explained else "outside", equivalent


def _difference(project: dict, book: dict) -> tuple[str, bool]:
    """Project minus book with its Welch 95% interval and, from the runs, whether a two one-sided test puts it
    within ±MARGIN (the sentence, and that verdict); inside the book's interval alone says neither."""
    ours, theirs = project.get("runs"), book.get("runs")
    if not (isinstance(ours, list) and isinstance(theirs, list)):
        return f"{float(project['mean']) - float(book['mean']):+.4f}", False
    diff = stats.welch(ours, theirs).difference
    same = stats.equivalent(stats.welch(ours, theirs, level=1 - 2 * ALPHA).difference, MARGIN)
    verdict = (f"equivalent within ±{MARGIN:g} (TOST)" if same else "a difference" if not diff.contains(0.0) else
               f"the data cannot tell: equivalence within ±{MARGIN:g} is not shown by {len(ours)} and "
               f"{len(theirs)} runs")
    return f"{diff.mean:+.4f} [{diff.low:+.4f}, {diff.high:+.4f}], Welch; {verdict}", same


def _factor_entries(factors: dict | list) -> Iterator[tuple[str, str, dict]]:
    """(name, description, entry) per factor (a dict by name, or a list of dicts naming their `factor`); a group
    of factors (the book's code variants) is opened up."""
    items = factors.items() if isinstance(factors, dict) else [
        (f.get("factor", f.get("name", "?")), f) for f in factors if isinstance(f, dict)]
    for name, entry in items:
        if not isinstance(entry, dict):
            continue
        nested = {k: v for k, v in entry.items() if isinstance(v, dict) and "description" in v}
        if nested and "effect" not in entry:
            for sub, sub_entry in nested.items():
                yield f"{name}: {sub}", str(sub_entry["description"]), sub_entry
            continue
        yield name, str(entry.get("description") or entry.get("note") or ""), entry


def factor_rows(factors: dict | list) -> list[list[Any]]:
    """One row per factor and model: means of both sides (runs), the effect with its 95% interval and test."""
    rows = []
    for name, description, entry in _factor_entries(factors):
        if isinstance(entry.get("effect"), (int, float)):  # one number for both models
            ci = entry.get("ci95")
            shown = f"{entry['effect']:+.4f}" + (f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else
                                                 " (by construction)" if "construction" in description else "")
            rows.append([name, "both", description, "-", "-", shown, "-"])
            continue
        for model, cell in entry.items():
            if not (isinstance(cell, dict) and isinstance(cell.get("effect"), dict)):
                continue
            base, variant, paired = cell["baseline"], cell["variant"], cell.get("effect_paired")
            rows.append([name, model, description, f"{base['mean']:.4f} ({base['n']})",
                         f"{variant['mean']:.4f} ({variant['n']})",
                         f"{_effect(cell)} ({cell['effect'].get('test', 'Welch t')})",
                         f"{_effect({'effect': paired})} (paired)" if paired else "-"])
            description = ""  # said once per factor
    return rows


def check_rows(data: dict) -> list[list[Any]]:
    """The harness against the project's own runs, and the book's runs against the harness with the book's
    choices: an interval around 0 means the harness reproduces them."""
    checks = {f"harness vs the project's runs, examples order, {m}": c
              for m, c in (data.get("harness_fidelity") or {}).items()}
    checks.update({f"book {k} vs the harness with the book's choices": c
                   for k, c in (data.get("residuals") or {}).items() if isinstance(c, dict)})
    return [[name, f"{c['baseline']['mean']:.4f} ({c['baseline']['n']})",
             f"{c['variant']['mean']:.4f} ({c['variant']['n']})", _effect(c)] for name, c in checks.items()]


def _curves_figure(data: dict, ctx: Context) -> list[str]:
    models = list(dict.fromkeys(m for _, m, _ in comparisons(data)))
    fig, axes = figure(len(models))
    for ax, model in zip(axes, models):
        drawn = set()
        for framework, m, sides in comparisons(data):
            for key, side in sides.items():
                curve = side.get("curves") if isinstance(side, dict) else None
                label = f"{LABELS.get(key, key)}, {framework}" if key == "book" else LABELS.get(key, key)
                if m != model or not isinstance(curve, dict) or label in drawn:
                    continue
                drawn.add(label)
                ax.plot(curve["epoch"], curve["mean"], "o-" if key == "book" else "s--", ms=3, label=label)
        ax.set(xlabel="epoch", ylabel="test accuracy (mean over runs)", title=model)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return [save_figure(fig, ctx, "book_curves.png")]


def section(data: dict, path: str, ctx: Context | None = None) -> Section:
    rows = []
    for framework, model, sides in comparisons(data):
        for key in ("book", "project", "project_examples"):
            if isinstance(sides.get(key), dict):
                n, mean, std, (lo, hi) = _side(sides[key])
                rows.append([framework, model, LABELS[key], n, fmt(mean), fmt(std), f"[{lo:.4f}, {hi:.4f}]"])
    tables = [Table(["framework", "model", "code", "runs", "mean test acc", "std", "95% interval"], rows,
                    "Final test accuracy over runs (the project's runs stand beside both frameworks)")]
    factors = data.get("factors") or {}
    if factors:
        tables.append(Table(["factor", "model", "what changes", "baseline (runs)", "variant (runs)",
                             "effect, variant - baseline [95%]", "paired [95%]"], factor_rows(factors),
                            "Factors tried one at a time, each with its measured effect"))
    checks = check_rows(data)
    if checks:
        tables.append(Table(["check", "baseline (runs)", "variant (runs)", "difference [95%]"], checks,
                            "Checks of the harness"))
    verdicts = [_verdict(f, m, s, factors) for f, m, s in comparisons(data)]
    count = {status: sum(v[1] == status for v in verdicts) for status in ("inside", "explained", "outside")}
    summary = f"the project's default is inside the book's 95% interval in {count['inside']} of {len(verdicts)}"
    summary += f" (shown equivalent within ±{MARGIN:g} in {sum(v[2] for v in verdicts)})"
    if count["explained"]:
        summary += (f"; {count['explained']} more fall inside with the book's loader order (--data_order), whose "
                    "effect the factors measure")
    figures = _curves_figure(data, ctx) if ctx is not None else []
    return Section("book", TITLE, QUESTION, tables, figures, "; ".join(v[0] for v in verdicts) + ".",
                   f"{SETUP}; stored in `{_relative(path)}`",
                   "measured on this machine type by the harness, not during this report's run", data,
                   summary=summary, evidence="; ".join(_evidence(f, m, s) for f, m, s in comparisons(data)))


def _evidence(framework: str, model: str, sides: dict) -> str:
    _, book_mean, _, (lo, hi) = _side(sides["book"])
    return f"{framework} {model}: {_side(sides['project'])[1]:.4f} vs {book_mean:.4f} [{lo:.4f}, {hi:.4f}]"


def _relative(path: str) -> str:
    return os.path.relpath(os.path.abspath(path), REPO_ROOT)
