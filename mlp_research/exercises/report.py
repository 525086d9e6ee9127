"""REPORT.md and report.json from the sections the question modules produced, and their publication.

The report opens with a summary table (each question's answer in one line,
its evidence and runtime, linked to its section), the rules its statistics
follow and the hardware; then one section per question: the question, its
setup, tables, figures linked relative to the report (so the work directory
can be moved or published whole), the computed answer and the hardware the
numbers came from. report.json holds the headline numbers, and every seed's
values, in a stable form for tools and for review. Every path the published
report names is relative to the repository.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import shutil
import time
from typing import Sequence

from mlp_research import hardware
from mlp_research.errors import ConfigError, warn
from mlp_research.exercises import compare, settings, timing
from mlp_research.exercises.common import Section, Table, fmt
from mlp_research.exercises.hardware import device_label, host_label
from mlp_research.files import atomic_write
from mlp_research.run.summary import REPO_ROOT, provenance

REPORT = "REPORT.md"
REPORT_LOCK = ".report.lock"  # held by `experiments.report` for its whole run: apart from its runs' own locks
REPORT_JSON = "report.json"
REPORT_FORMAT = 2
MAX_PUBLISHED_BYTES = 5 * 2**20


def markdown_table(table: Table) -> str:
    lines = [f"*{table.caption}*\n"] if table.caption else []
    lines.append("| " + " | ".join(table.headers) + " |")
    lines.append("|" + "|".join(" --- " for _ in table.headers) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines)


def label(qid: str) -> str:
    """'Q1' for a question, 'Book' for the book comparison."""
    return qid.upper() if qid[:1] == "q" and qid[1:].isdigit() else qid.capitalize()


def heading(section: Section) -> str:
    return f"{label(section.qid)}. {section.title}" if section.qid[:1] == "q" else section.title


def anchor(text: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def render_section(section: Section) -> str:
    parts = [f"## {heading(section)}", f"**Question.** {section.question}", f"**Setup.** {section.setup}",
             f"**Hardware.** {section.hardware}"]
    parts += [markdown_table(t) for t in section.tables]
    parts += [f"![{section.qid} figure]({fig})" for fig in section.figures]
    parts.append(f"**Answer.** {section.answer}")
    return "\n\n".join(parts)


def one_line(section: Section) -> str:
    """The summary's answer: the section's own line, else (a section that gives none) its first sentence."""
    if section.summary:
        return section.summary
    first = re.split(r"(?<=[.!?])\s", section.answer.replace("**", ""), maxsplit=1)[0]
    return first


def summary_table(sections: Sequence[Section], failures: dict[str, str], order: Sequence[str]) -> Table:
    by_id = {s.qid: s for s in sections}
    rows = []
    for qid in order:
        if qid in by_id:
            s = by_id[qid]
            rows.append([f"[{label(qid)}](#{anchor(heading(s))})", one_line(s), s.evidence or "see the section",
                         s.precision or "-", f"{s.seconds / 60:.1f} min"])
        elif qid in failures:
            rows.append([label(qid), "failed", failures[qid], "-", "-"])
    return Table(["question", "answer", "evidence", "matmul precision", "runtime"], rows)


def hardware_line() -> str:
    """The CPU by name, whether it has AVX-512 and AMX (and which parts), and its cores; the JAX device."""
    import jax

    info = hardware.describe()
    ext = info["extensions"]
    avx512 = [e for e in ext if e.startswith("AVX-512") or e.startswith("AVX512")]
    amx = [e for e in ext if e.startswith("AMX")]
    return (f"{info['cpu_model']} ({info['cpu_count']} cores; AVX-512: "
            f"{'yes (' + ', '.join(avx512) + ')' if avx512 else 'no'}; AMX: "
            f"{'yes (' + ', '.join(amx) + ')' if amx else 'no'}); JAX runs on "
            + ("this CPU" if jax.devices()[0].platform == "cpu" else device_label())
            + f"; Python {platform.python_version()}, jax {jax.__version__}")


def render_failure(qid: str, error: str) -> str:
    return f"## {label(qid)}. (failed)\n\nThis experiment failed: `{error}`. Rerun it with `--only={qid}`."


def repo_relative(path: str) -> str:
    """`path` relative to the repository (what a reader of the published report can follow)."""
    return os.path.relpath(os.path.abspath(path), REPO_ROOT) if path else path


def render_report(sections: Sequence[Section], failures: dict[str, str], mode: str, data: str,
                  seconds: float, order: Sequence[str]) -> str:
    header = [
        "# MLP exercises: measured answers",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by `python -m experiments.report` ({mode} size), "
        f"in {seconds / 60:.1f} minutes of this run (reused trials are not counted); code "
        f"{provenance()['commit'][:12]}.",
        f"**Hardware:** {hardware_line()}.",
        markdown_table(summary_table(sections, failures, order)),
        f"**Data:** {data}. Every choice uses the validation split carved from the training set; test accuracy is "
        "reported alongside but never used to choose.",
        f"**Statistics:** the accuracy statistic is {settings.STATISTIC}; {compare.RULES}.",
        f"**Timings:** {timing.NOISE_RULE}.",
    ]
    by_id = {s.qid: s for s in sections}
    body = [render_section(by_id[q]) if q in by_id else render_failure(q, failures[q])
            for q in order if q in by_id or q in failures]
    return "\n\n".join(header) + "\n\n" + "\n\n".join(body) + "\n"


def report_json(sections: Sequence[Section], failures: dict[str, str], mode: str, seconds: float) -> dict:
    """The headline numbers: provenance, then one entry per question (its `headline` and wall time)."""
    code = provenance()
    out = {"format": REPORT_FORMAT, "commit": code["commit"], "dirty": code["dirty"],
           "generated": time.strftime("%Y-%m-%d"), "mode": mode, "device": device_label(), "host": host_label(),
           "hardware": hardware.describe(), "wall_seconds": seconds,
           "sections_seconds": sum(s.seconds for s in sections)}
    for s in sections:
        out[s.qid] = {**s.headline, "title": s.title, "seconds": s.seconds, "summary": one_line(s),
                      "evidence": s.evidence, "matmul_precision": s.precision or None}
    for qid, error in failures.items():
        out[qid] = {"failed": error}
    return json.loads(json.dumps(out, default=_plain))


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def save_section(workdir: str, section: Section) -> None:
    """Keep a rendered section, so `--only` runs can rebuild the full report without rerunning the others."""
    path = os.path.join(workdir, "sections", f"{section.qid}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, json.dumps(dataclasses.asdict(section), indent=1, default=_plain) + "\n")


def load_section(workdir: str, qid: str) -> Section | None:
    """A stored section; None if absent, and None with a warning if unreadable (rerun that question)."""
    path = os.path.join(workdir, "sections", f"{qid}.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            data = json.load(f)
        data["tables"] = [Table(**t) for t in data["tables"]]
        return Section(**data)
    except (OSError, ValueError, TypeError, KeyError) as e:
        warn(f"{path}: unreadable stored section ({' '.join(str(e).split())[:100]}); ignored, rerun --only={qid}")
        return None


def local_links(text: str) -> list[str]:
    """Every link target of a markdown text that is not a web address (figures, files, #anchors)."""
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+://", t)]


def broken_links(text: str, base: str) -> list[str]:
    """Links of a report that do not resolve: a missing file relative to `base`, or an anchor no heading has."""
    anchors = {anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
    broken = []
    for link in local_links(text):
        path, _, fragment = link.partition("#")
        if path and not os.path.exists(os.path.join(base, path)):
            broken.append(link)
        elif not path and fragment not in anchors:
            broken.append(link)
    return broken


def write_outputs(workdir: str, text: str, record: dict) -> str:
    path = os.path.join(workdir, REPORT)
    atomic_write(path, text)
    atomic_write(os.path.join(workdir, REPORT_JSON), json.dumps(record, indent=1, sort_keys=False) + "\n")
    return path


def absolute_paths(text: str, workdir: str) -> list[str]:
    """Absolute paths of this machine that a published text must not name."""
    roots = {os.path.abspath(REPO_ROOT), os.path.abspath(workdir), os.path.dirname(os.path.abspath(REPO_ROOT)),
             os.path.expanduser("~")}
    return sorted({r for r in roots if len(r) > 1 and r in text})


def publish(workdir: str, target: str) -> list[str]:
    """Copy REPORT.md, report.json and the figures REPORT.md links into `target` (its old figures removed)."""
    with open(os.path.join(workdir, REPORT)) as f:
        text = f.read()
    with open(os.path.join(workdir, REPORT_JSON)) as f:
        record = f.read()
    leaked = absolute_paths(text + record, workdir)
    if leaked:
        raise ConfigError(f"--publish: the report names absolute paths of this machine ({', '.join(leaked)})")
    links = [link for link in local_links(text) if not link.startswith("#")]
    size = len(text) + len(record) + sum(os.path.getsize(os.path.join(workdir, link)) for link in links)
    if size > MAX_PUBLISHED_BYTES:
        raise ConfigError(f"--publish: the report with its figures is {size / 2**20:.1f} MB, over the "
                          f"{MAX_PUBLISHED_BYTES / 2**20:.0f} MB budget")
    shutil.rmtree(os.path.join(target, "figures"), ignore_errors=True)
    written = []
    for link in links:
        os.makedirs(os.path.dirname(os.path.join(target, link)), exist_ok=True)
        shutil.copyfile(os.path.join(workdir, link), os.path.join(target, link))
        written.append(os.path.join(target, link))
    atomic_write(os.path.join(target, REPORT), text)
    atomic_write(os.path.join(target, REPORT_JSON), record)
    return [os.path.join(target, REPORT), os.path.join(target, REPORT_JSON), *written]
