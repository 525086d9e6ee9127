"""Compare runs side by side: which settings differ, and how each run did.

Reads only what runs write (metrics.jsonl, summary.json, group.json, the JSON
`meta` of the newest checkpoint), never imports JAX or Orbax, and never fails
on a damaged or half-written run: a file it cannot read is named in a warning
and the run is shown as far as it can be (a run without a readable summary is
"in progress"). A vmap group directory stands for its members.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import math
import os
import statistics
from typing import Any, Sequence

from mlp_research.config import Config
from mlp_research.errors import warn
from mlp_research.files import atomic_path, atomic_write, read_json_object, storage_error
from mlp_research.run.members import GROUP_FILE
from mlp_research.run.metrics import METRICS_FILE, SUMMARY_FILE, MetricsRow, read_rows
from mlp_research.run.plots import pyplot
from mlp_research.run.workdir import CHECKPOINT_DIR

TRIAL_FILE = "trial.json"


@dataclasses.dataclass
class Run:
    """What one run directory holds, as far as it could be read."""

    path: str  # the directory (a group member's may not exist yet)
    name: str  # how tables and legends name it
    config: dict | None = None
    rows: list[MetricsRow] = dataclasses.field(default_factory=list)
    summary: dict | None = None  # set only for a finished run
    diverged: bool = False
    pruned: bool = False  # a search stopped it early on purpose (its trial.json says so)

    @property
    def status(self) -> str:
        if self.summary is not None:
            return "finished, diverged" if self.diverged else "finished"
        epochs = self.config.get("max_epochs", "?") if self.config else "?"
        epoch = self.rows[-1].epoch if self.rows else 0
        return f"pruned after epoch {epoch} of {epochs}" if self.pruned else f"in progress (epoch {epoch} of {epochs})"

    def final(self, key: str) -> float | None:
        """The finished run's final value, or the latest epoch's while it trains."""
        final = (self.summary or {}).get("final")
        if isinstance(final, dict) and isinstance(final.get(key), (int, float)):
            return final[key]
        return getattr(self.rows[-1], key) if self.rows else None

    def best_val_acc(self) -> float | None:
        best = (self.summary or {}).get("best_val_acc")
        if isinstance(best, (int, float)):
            return best
        accs = [r.val_acc for r in self.rows if math.isfinite(r.val_acc)]
        return max(accs) if accs else None

    def steady_epoch_seconds(self) -> float | None:
        """As the driver reports it: the median epoch time without the first (compiling) epoch."""
        steady = (self.summary or {}).get("steady_epoch_seconds")
        if isinstance(steady, (int, float)):
            return steady
        seconds = [r.seconds for r in self.rows]
        return statistics.median(seconds[1:] if len(seconds) > 1 else seconds) if seconds else None

    def backend(self) -> str | None:
        return (self.summary or {}).get("backend") or (self.config or {}).get("backend")


# ------------------------------------------------------------------ reading
def checkpoint_config(path: str) -> dict | None:
    """The flat config in the newest complete checkpoint's `meta` item (an unfinished save has no numeric name)."""
    directory = os.path.join(path, CHECKPOINT_DIR)
    try:
        steps = sorted((int(n) for n in os.listdir(directory) if n.isdigit()), reverse=True)
    except OSError:
        return None
    for step in steps:
        meta = os.path.join(directory, str(step), "meta", "metadata")
        if os.path.exists(meta):
            config = (read_json_object(meta) or {}).get("config")
            if isinstance(config, dict):
                return config
    return None


def load_run(path: str, name: str, group_member: dict | None = None) -> Run:
    """Read a run directory. `group_member`: its entries in the group's group.json and summary.json."""
    member = group_member or {}
    rows = read_rows(path)
    stored = read_json_object(os.path.join(path, SUMMARY_FILE)) or member.get("summary")
    summary = stored if stored is not None and _summary_is_final(stored, rows) else None
    # (a summary older than the rows: resumed past it, still training)
    # A sweep's or a search's trial.json holds the trial's config (and a search's its state), for runs that end
    # without a summary or a checkpoint: a pruned trial.
    record = (read_json_object(os.path.join(path, TRIAL_FILE)) or {}) if summary is None else {}
    configs = [member.get("config"), (stored or {}).get("config"), record.get("config")]
    if summary is None:  # a resume may have changed max_epochs: the newest checkpoint knows
        configs.insert(0, checkpoint_config(path))
    config = next((c for c in configs if isinstance(c, dict)), None)
    if config is not None:  # a field the run predates: it ran with that field's default
        config = {**_defaults(), **config}
    diverged = bool((summary or {}).get("diverged") or (member.get("summary") or {}).get("diverged"))
    return Run(path, name, config, rows, summary, diverged and summary is not None, record.get("state") == "PRUNED")


def _summary_is_final(summary: dict, rows: list[MetricsRow]) -> bool:
    final = summary.get("final")
    if not isinstance(final, dict) or not isinstance(final.get("epoch"), int):
        return False
    return not rows or final["epoch"] >= rows[-1].epoch


def load_group(path: str, name: str) -> list[Run] | None:
    """The members of a vmap group directory, named `<name>/<member>`; None if `path` is no group."""
    definition = read_json_object(os.path.join(path, GROUP_FILE))
    summary = read_json_object(os.path.join(path, SUMMARY_FILE))
    entries = (definition or {}).get("members")
    if not isinstance(entries, list) and (summary or {}).get("group"):
        # group.json is damaged; the group's summary still names the members (its configs hold only the axes)
        entries = [{"name": m.get("name")} for m in summary.get("members", []) if isinstance(m, dict)]
    if not isinstance(entries, list):
        return None
    finished = {m.get("name"): m for m in (summary or {}).get("members", []) if isinstance(m, dict)}
    runs = []
    for entry in entries:
        member = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(member, str) or not member or os.sep in member:
            warn(f"{os.path.join(path, GROUP_FILE)}: a member without a usable name; skipped")
            continue
        info = {"config": entry.get("config"), "summary": finished.get(member)}
        runs.append(load_run(os.path.join(path, member), os.path.join(name, member), info))
    return runs


# ------------------------------------------------------------------ finding
def find_runs(args: Sequence[str]) -> list[Run]:
    """The runs named by paths and globs, in the order given; a group directory stands for its members."""
    runs: list[Run] = []
    seen: set[str] = set()
    for arg in args:
        paths = [arg] if os.path.lexists(arg) or not glob.has_magic(arg) else sorted(glob.glob(arg))
        if not paths:
            warn(f"{arg} matches nothing; skipped")
        for path in paths:
            for run in _runs_at(path):
                key = os.path.realpath(run.path)
                if key not in seen:
                    seen.add(key)
                    runs.append(run)
    return runs


def _runs_at(path: str) -> list[Run]:
    name = display_path(path)
    if os.path.exists(os.path.join(path, GROUP_FILE)):
        members = load_group(path, name)
        if members is not None:
            return members
    elif any(os.path.exists(os.path.join(path, f)) for f in (METRICS_FILE, SUMMARY_FILE)):
        return [load_run(path, name, _member_of_group(path))]
    warn(f"{name} is not a run; skipped" if os.path.isdir(path) else f"{name} does not exist; skipped")
    return []


def _member_of_group(path: str) -> dict | None:
    """A member directory named on its own still gets its config from its group's group.json."""
    parent, member = os.path.split(os.path.normpath(os.path.abspath(path)))
    if not os.path.exists(os.path.join(parent, GROUP_FILE)):
        return None
    entries = (read_json_object(os.path.join(parent, GROUP_FILE)) or {}).get("members")
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("name") == member:
            return {"config": entry.get("config")}
    return None


def display_path(path: str) -> str:
    """The path relative to the working directory where that is shorter, else absolute."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute)
    return relative if len(relative) < len(absolute) else absolute


# ------------------------------------------------------------------ differences
@functools.lru_cache(maxsize=1)
def _defaults() -> dict[str, Any]:
    return Config().as_dict()


def _field_values(runs: Sequence[Run]) -> dict[str, list[Any]]:
    """Each config field's value in every run whose config is known, in the config's field order."""
    configs = [r.config for r in runs if r.config is not None]
    names = list(_defaults()) + sorted({n for c in configs for n in c} - set(_defaults()))
    return {n: [c.get(n) for c in configs] for n in names}


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def differing_fields(runs: Sequence[Run]) -> list[str]:
    """Config fields whose value is not the same in every run (in the order of the config's fields)."""
    return [n for n, values in _field_values(runs).items() if len({_key(v) for v in values}) > 1]


def equal_fields(runs: Sequence[Run]) -> dict[str, Any]:
    """Config fields with one value in every run whose config is known."""
    return {n: values[0] for n, values in _field_values(runs).items()
            if values and len({_key(v) for v in values}) == 1}


def format_value(value: Any) -> str:
    """Config values as a user would type them: 0.05, mlp, [256,128], true."""
    if isinstance(value, bool) or value is None or value == "":
        return json.dumps(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def labels(runs: Sequence[Run], fields: Sequence[str]) -> list[str]:
    """What tells each run apart (`lr=0.05, model=mlp`); the run's name where that is not unique."""
    texts = [", ".join(f"{n}={format_value(r.config.get(n))}" for n in fields) if r.config and fields else ""
             for r in runs]
    return [t if t and texts.count(t) == 1 else (f"{r.name} ({t})" if t else r.name) for r, t in zip(runs, texts)]


# ------------------------------------------------------------------ outputs
def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(runs: Sequence[Run], fields: Sequence[str]) -> str:
    """One row per run: name, status, the differing fields, results and speed."""
    header = ["run", "status", *fields, "final val_acc", "best val_acc", "final train_loss",
              "steady epoch time (s)", "backend"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for run in runs:
        config = [format_value(run.config.get(n)) if run.config else "?" for n in fields]
        cells = [run.name, run.status, *config, _number(run.final("val_acc"), ".4f"),
                 _number(run.best_val_acc(), ".4f"), _number(run.final("train_loss"), ".4f"),
                 _number(run.steady_epoch_seconds(), ".3g"), run.backend() or "-"]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def equal_line(runs: Sequence[Run], width: int = 24) -> str:
    """`Equal in all runs: backend=jax, batch_size=256, ...`, each value cut to `width` characters."""
    equal = equal_fields(runs)
    if not equal:
        return "Equal in all runs: no config field (or no config could be read)."
    parts = []
    for name, value in equal.items():
        text = format_value(value)
        parts.append(f"{name}={text if len(text) <= width else text[:width - 1] + '…'}")
    return "Equal in all runs: " + ", ".join(parts) + "."


def write_outputs(runs: Sequence[Run], out_dir: str) -> list[str]:
    """DIR/compare.md (the table and the equal fields) and DIR/compare.png; returns the paths written."""
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise storage_error(out_dir, e) from None
    fields = differing_fields(runs)
    png = os.path.join(out_dir, "compare.png")
    plotted = plot(runs, fields, png)
    text = f"# {len(runs)} runs compared\n\n{markdown_table(runs, fields)}\n{equal_line(runs)}\n"
    if plotted:
        text += "\n![val_acc and train_loss per epoch](compare.png)\n"
    md = os.path.join(out_dir, "compare.md")
    atomic_write(md, text)
    return [md, png] if plotted else [md]


FIGURE_WIDTH, PLOT_HEIGHT = 1100, 380  # pixels (at 100 dpi); the legend below adds height
_MARKERS = "os^DvPX"  # 7 markers against 10 colours: 70 runs before a (colour, marker) pair repeats
_STYLES = ("-", "--", "-.", ":")


def legend_columns(texts: Sequence[str]) -> int:
    """As many legend columns as the longest label allows (a line sample, then 8-point text, ~7 px a character)."""
    return max(1, min(len(texts), FIGURE_WIDTH // (50 + 7 * max((len(t) for t in texts), default=0))))


def figure_pixels(texts: Sequence[str]) -> tuple[int, int]:
    """(width, height) of compare.png: the panels, and below them a legend of 16-pixel rows."""
    rows = math.ceil(len(texts) / legend_columns(texts)) if texts else 0
    return FIGURE_WIDTH, PLOT_HEIGHT + (16 + 16 * rows if rows else 0)


def plot(runs: Sequence[Run], fields: Sequence[str], path: str) -> bool:
    """val_acc and train_loss against epoch, one line per run labelled by what differs.

    Returns False, writing nothing, where matplotlib is not installed.
    """
    try:
        plt = pyplot()
    except ImportError:
        warn(f"matplotlib is not installed; {path} not written")
        return False
    drawn = [(i, run, name) for i, (run, name) in enumerate(zip(runs, labels(runs, fields))) if run.rows]
    texts = [name for _, _, name in drawn]
    width, height = figure_pixels(texts)
    fig, axes = plt.subplots(1, 2, figsize=(width / 100, height / 100), dpi=100)
    for i, run, name in drawn:
        every = max(1, len(run.rows) // 8)  # about 8 markers a line, staggered so that lines on top stay apart
        style = dict(color=f"C{i % 10}", marker=_MARKERS[i % len(_MARKERS)], linestyle=_STYLES[i // 10 % 4],
                     markersize=4, markevery=(i % every, every), label=name)
        epochs = [r.epoch for r in run.rows]
        axes[0].plot(epochs, [r.val_acc for r in run.rows], **style)
        axes[1].plot(epochs, [r.train_loss for r in run.rows], **style)
    for ax, metric in zip(axes, ("val_acc", "train_loss")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
    if drawn:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=legend_columns(texts), fontsize=8,
                   frameon=False)
    fig.tight_layout(rect=(0, (height - PLOT_HEIGHT) / height, 1, 1))
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return True
