"""Render REPORT.md from the sections the question runners produced.

One section per question: the question, its setup, tables, figures linked
relative to the report (so the work directory can be moved or published
whole), the computed answer and the hardware the numbers came from.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from typing import Sequence

from mlp_research.exercises.common import Section, Table, fmt
from mlp_research.exercises.hardware import device_label, host_label

REPORT = "REPORT.md"


def markdown_table(table: Table) -> str:
    lines = []
    if table.caption:
        lines.append(f"*{table.caption}*\n")
    lines.append("| " + " | ".join(table.headers) + " |")
    lines.append("|" + "|".join(" --- " for _ in table.headers) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines)


def render_section(section: Section) -> str:
    parts = [f"## {section.qid.upper()}. {section.title}", f"**Question.** {section.question}",
             f"**Setup.** {section.setup}", f"**Hardware.** {section.hardware}"]
    parts += [markdown_table(t) for t in section.tables]
    parts += [f"![{section.qid} figure]({fig})" for fig in section.figures]
    parts.append(f"**Answer.** {section.answer}")
    return "\n\n".join(parts)


def render_failure(qid: str, error: str) -> str:
    return f"## {qid.upper()}. (failed)\n\nThis experiment failed: `{error}`. Rerun it with `--only={qid}`."


def render_report(sections: Sequence[Section], failures: dict[str, str], mode: str, data: str,
                  seconds: float, order: Sequence[str]) -> str:
    import jax

    header = [
        "# MLP exercises: measured answers",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by `python -m experiments.report` ({mode} size), "
        f"in {seconds / 60:.1f} minutes of this run (reused trials are not counted).",
        f"**Data:** {data}. Every choice uses the validation split carved from the training set; test accuracy is "
        "reported alongside but never used to choose.",
        f"**Hardware:** JAX default device {device_label()}; host {host_label()}; Python {platform.python_version()}, "
        f"jax {jax.__version__}.",
    ]
    by_id = {s.qid: s for s in sections}
    body = []
    for qid in order:
        if qid in by_id:
            body.append(render_section(by_id[qid]))
        elif qid in failures:
            body.append(render_failure(qid, failures[qid]))
    return "\n\n".join(header) + "\n\n" + "\n\n".join(body) + "\n"


def save_section(workdir: str, section: Section) -> None:
    """Keep a rendered section, so `--only` runs can rebuild the full report without rerunning the others."""
    path = os.path.join(workdir, "sections", f"{section.qid}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(dataclasses.asdict(section), f, indent=1, default=str)
    os.replace(path + ".tmp", path)


def load_section(workdir: str, qid: str) -> Section | None:
    path = os.path.join(workdir, "sections", f"{qid}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        data = json.load(f)
    data["tables"] = [Table(**t) for t in data["tables"]]
    return Section(**data)


def write_report(workdir: str, text: str) -> str:
    path = os.path.join(workdir, REPORT)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path
