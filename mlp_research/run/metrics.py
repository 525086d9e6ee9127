"""The metrics row of an epoch, and where rows go: metrics.jsonl, TensorBoard, the progress line.

`MetricsRow` is the single definition of what an epoch reports; every writer,
the plot and the summary derive from it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Sequence

from mlp_research.errors import warn
from mlp_research.files import atomic_write, error_reason, storage_error
from mlp_research.run.tensorboard import ScalarWriter

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CURVES_FILE = "curves.png"
TENSORBOARD_DIR = "tensorboard"
SCALARS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "examples_per_second")


@dataclasses.dataclass(frozen=True)
class MetricsRow:
    """One epoch. Losses and accuracies are means over examples."""

    epoch: int  # 1-based, as printed
    step: int  # optimiser steps taken so far
    train_loss: float
    train_acc: float
    val_loss: float  # on the split evaluated each epoch (test or validation)
    val_acc: float
    seconds: float  # wall time of this epoch's training and evaluation
    examples_per_second: float  # training examples per second this epoch
    lr: float = float("nan")  # learning rate of the epoch's last step (NaN in rows older releases wrote)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: dict) -> "MetricsRow":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def progress_line(self, max_epochs: int, elapsed: float, remaining: float | None, name: str = "") -> str:
        member = f"[{name}] " if name else ""
        eta = f"  eta {format_duration(remaining)}" if remaining is not None else ""
        return (
            f"epoch {self.epoch:>3}/{max_epochs}  {member}train_loss {self.train_loss:.4f}  "
            f"train_acc {self.train_acc:.4f}  val_loss {self.val_loss:.4f}  val_acc {self.val_acc:.4f}  "
            f"{self.examples_per_second:,.0f} ex/s  {self.seconds:.2f} s  elapsed {format_duration(elapsed)}{eta}"
        )


_ROW_FIELDS = {f.name for f in dataclasses.fields(MetricsRow)}
# Fields a row must have; later additions have defaults, so rows older releases wrote still count.
_REQUIRED_ROW_FIELDS = {f.name for f in dataclasses.fields(MetricsRow)
                        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}


def format_duration(seconds: float) -> str:
    """`0:07`, `3:25`, `1:02:03`."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(max(seconds, 0.0)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def remaining_seconds(epoch_seconds: Sequence[float], epochs_left: int) -> float | None:
    """Time left at the median pace of the epochs seen (the first, which compiles, only if alone)."""
    if not epoch_seconds:
        return None
    pace = sorted(epoch_seconds[1:] or epoch_seconds)
    return pace[len(pace) // 2] * epochs_left


def read_rows(workdir: str) -> list[MetricsRow]:
    """Rows of `workdir`'s metrics.jsonl; a bad line is skipped with a warning (an unfinished last line silently)."""
    path = os.path.join(workdir, METRICS_FILE)
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return []
    except OSError as e:
        warn(f"{path}: cannot read it ({error_reason(e)}); ignoring it")
        return []
    rows, lines = [], text.split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(_row(json.loads(line)))
        except ValueError as e:
            if number < len(lines):  # the last piece has no newline yet: a row being written
                warn(f"{path} line {number}: not a metrics row ({error_reason(e)}); line skipped")
    return rows


def _row(values: Any) -> MetricsRow:
    if not isinstance(values, dict):
        raise ValueError("not a JSON object")
    missing = sorted(_REQUIRED_ROW_FIELDS - set(values))
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    if not all(isinstance(values[k], (int, float)) and not isinstance(values[k], bool)
               for k in _ROW_FIELDS & set(values)):
        raise ValueError("a value is not a number")
    return MetricsRow.from_dict(values)


def write_rows(workdir: str, rows: Sequence[MetricsRow]) -> None:
    """Rewrite metrics.jsonl atomically with exactly `rows`."""
    atomic_write(os.path.join(workdir, METRICS_FILE), "".join(row.to_json() + "\n" for row in rows))


def write_json(path: str, payload: dict) -> None:
    """Write JSON atomically (a crash leaves the old file, never half a file)."""
    atomic_write(path, json.dumps(payload, indent=2, sort_keys=True, default=_plain) + "\n")


def _plain(value: Any) -> Any:
    """numpy scalars and arrays in summaries, as plain JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class MetricsWriter:
    """Appends rows to metrics.jsonl (flushed each epoch) and TensorBoard.

    TensorBoard is an extra view: if its events cannot be written, the run warns
    once and goes on; metrics.jsonl failing is a `StorageError`.
    """

    def __init__(self, workdir: str, hparams: dict[str, Any]):
        self.path = os.path.join(workdir, METRICS_FILE)
        try:
            self._jsonl = open(self.path, "a")
        except OSError as e:
            raise storage_error(self.path, e) from None
        self._tb: ScalarWriter | None = None
        try:
            self._tb = ScalarWriter(os.path.join(workdir, TENSORBOARD_DIR))
            self._tb.hparams(hparams)
        except OSError as e:
            warn(f"{os.path.join(workdir, TENSORBOARD_DIR)}: TensorBoard events not written ({e.strerror or e})")
            self._tb = None

    def write(self, row: MetricsRow) -> None:
        try:
            self._jsonl.write(row.to_json() + "\n")
            self._jsonl.flush()
        except OSError as e:
            raise storage_error(self.path, e) from None
        if self._tb is not None:
            try:
                for name in SCALARS:
                    self._tb.scalar(name, getattr(row, name), row.epoch)
                self._tb.flush()
            except OSError as e:
                warn(f"TensorBoard events not written from epoch {row.epoch} on ({e.strerror or e})")
                self._tb = None

    def sync(self) -> None:
        """fsync metrics.jsonl (with every checkpoint, so rows on disk never lag a saved step)."""
        try:
            os.fsync(self._jsonl.fileno())
        except OSError as e:
            raise storage_error(self.path, e) from None

    def close(self, status: str | None = None) -> None:
        """Close both files; `status` ("success", "failure") ends the TensorBoard HParams session.

        A stopped run leaves its session open (None): TensorBoard keeps the first
        status it reads in a run directory, so only the run's true end may write one.
        """
        try:
            self._jsonl.close()
        except OSError:
            pass
        if self._tb is not None:
            try:
                if status is not None:
                    self._tb.session_end(status)
                self._tb.close()
            except OSError:
                pass
