"""Run (or reuse) every exercise experiment and write W/REPORT.md and W/report.json.

  python -m experiments.report --data_dir=../shared/data/fashion_mnist [--workdir=runs/report] [--smoke]
      [--only=q1,q4] [--search_workers=2] [--publish=docs/exercises]

Each question's settings live in experiments/exercises/q*_*.py (their `smoke` entry
is the CI size). Finished trials in the workdir are reused, so an interrupted
report resumes where it stopped; one line per trial shows progress, and long
groups a heartbeat with elapsed and remaining time. `--publish=DIR` copies the
report, report.json and its figures into DIR (the committed docs/exercises/).
"""

from __future__ import annotations

import glob
import os
import sys
import time

from absl import flags

from mlp_research import cli
from mlp_research.errors import ConfigError, UserError

flags.DEFINE_string("workdir", "runs/report", "Output directory for trials, figures, REPORT.md and report.json.")
flags.DEFINE_string("data_dir", "", "Fashion-MNIST IDX directory (default: $MLP_RESEARCH_DATA_DIR).")
flags.DEFINE_boolean("smoke", False, "Tiny sizes: every experiment in a few minutes (for CI).")
flags.DEFINE_string("only", "", "Comma-separated questions to run, e.g. q1,q4 (default: all ten).")
flags.DEFINE_boolean("synthetic", False, "Use the synthetic stand-in data instead of Fashion-MNIST.")
flags.DEFINE_integer("search_workers", 1, "Worker processes that share q5's study (1: search in this process).")
flags.DEFINE_string("publish", "", "Also copy REPORT.md, report.json and the figures into this directory.")
FLAGS = flags.FLAGS

EXERCISES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "exercises")


class ExperimentFailed(UserError):
    exit_code = 1


def experiment_files() -> dict[str, str]:
    files = {}
    for path in glob.glob(os.path.join(EXERCISES, "q*_*.py")):
        files[os.path.basename(path).split("_", 1)[0]] = path
    return files


def _check_flags(files: dict[str, str], order: list[str]) -> tuple[list[str], str, str]:
    """Every refusal before anything is written: (questions to run, data_dir, dataset)."""
    only = [q.strip() for q in FLAGS.only.split(",") if q.strip()] or order
    unknown = [q for q in only if q not in files]
    if unknown:
        raise ConfigError(f"--only: unknown question(s) {', '.join(unknown)}; choose from {', '.join(order)}")
    if FLAGS.search_workers < 1:
        raise ConfigError(f"--search_workers: must be >= 1, got {FLAGS.search_workers}")
    if not FLAGS.workdir:
        raise ConfigError("--workdir: must not be empty")
    if os.path.exists(FLAGS.workdir) and not os.path.isdir(FLAGS.workdir):
        raise ConfigError(f"--workdir: {FLAGS.workdir} exists and is not a directory")
    if FLAGS.publish and os.path.exists(FLAGS.publish) and not os.path.isdir(FLAGS.publish):
        raise ConfigError(f"--publish: {FLAGS.publish} exists and is not a directory")
    data_dir = FLAGS.data_dir or os.environ.get("MLP_RESEARCH_DATA_DIR", "")
    dataset = "synthetic" if FLAGS.synthetic else "fashion_mnist"
    if dataset == "fashion_mnist" and not (data_dir and os.path.isdir(data_dir)):
        raise ConfigError("--data_dir: Fashion-MNIST not found; pass --data_dir, set MLP_RESEARCH_DATA_DIR, "
                          "or use --synthetic")
    return only, data_dir, dataset


def main(argv: list[str]) -> None:
    from mlp_research.exercises import ORDER
    from mlp_research.exercises.report import REPORT_LOCK
    from mlp_research.run.workdir import WorkdirLock

    files = experiment_files()
    only, data_dir, dataset = _check_flags(files, ORDER)
    os.makedirs(FLAGS.workdir, exist_ok=True)
    with WorkdirLock(FLAGS.workdir, name=REPORT_LOCK):  # a second report on this workdir exits 6, writing nothing
        _run(files, only, data_dir, dataset)


def _run(files: dict[str, str], only: list[str], data_dir: str, dataset: str) -> None:
    """Every question in `only` (the others' stored sections reused), then REPORT.md and report.json."""
    from mlp_research.exercises import ORDER, question, report
    from mlp_research.exercises.common import Context, load_experiment

    ctx = Context(workdir=FLAGS.workdir, dataset=dataset, data_dir=os.path.abspath(data_dir) if data_dir else "",
                  smoke=FLAGS.smoke, log=lambda line: print(line, flush=True), search_workers=FLAGS.search_workers)
    configs = {q: load_experiment(files[q], FLAGS.smoke) for q in only}
    for qid in only:  # planned work of every question, for the remaining-time estimate
        try:
            ctx.clock.plan(qid, question(qid).plan(configs[qid], ctx))
        except Exception as e:  # noqa: BLE001 -- a plan is an estimate; the run reports real errors
            print(f"== {qid}: no time estimate ({type(e).__name__}: {e})", flush=True)
    sections, failures = [], {}
    for qid in ORDER:
        if qid not in only:  # keep the section an earlier run stored, without rerunning it
            stored = report.load_section(FLAGS.workdir, qid)
            if stored is not None:
                sections.append(stored)
            continue
        t0 = time.perf_counter()
        print(f"== {qid}: {os.path.basename(files[qid])} ({'smoke' if FLAGS.smoke else 'full'}); "
              + ctx.clock.describe(), flush=True)
        try:
            section = question(qid).section(configs[qid], ctx)
            section.seconds = time.perf_counter() - t0
            report.save_section(FLAGS.workdir, section)
            sections.append(section)
        except Exception as e:  # one failing question must not lose the others' report
            failures[qid] = f"{type(e).__name__}: {' '.join(str(e).split())}"
            print(f"== {qid} failed: {failures[qid]}", file=sys.stderr, flush=True)
            if os.environ.get("MLP_RESEARCH_RAISE"):
                raise
        ctx.clock.finish(qid)
        print(f"== {qid} done in {time.perf_counter() - t0:.1f} s; " + ctx.clock.describe(), flush=True)
    _write(report, sections, failures, dataset, data_dir, ctx.clock.elapsed(), ORDER)
    if failures:
        raise ExperimentFailed(f"{len(failures)} experiment(s) failed: {', '.join(failures)}")


def _write(report, sections, failures, dataset: str, data_dir: str, seconds: float, order: list[str]) -> None:
    mode = "smoke" if FLAGS.smoke else "full"
    data = (f"Fashion-MNIST IDX files in `{report.repo_relative(data_dir)}` (relative to the repository)"
            if dataset == "fashion_mnist" else "synthetic stand-in data (not Fashion-MNIST)")
    text = report.render_report(sections, failures, mode, data, seconds, order)
    path = report.write_outputs(FLAGS.workdir, text, report.report_json(sections, failures, mode, seconds))
    print(f"wrote {path} ({len(sections)} sections, {len(failures)} failed) in {seconds:.1f} s", flush=True)
    if FLAGS.publish and not failures:
        written = report.publish(FLAGS.workdir, FLAGS.publish)
        print(f"published {len(written)} files to {FLAGS.publish}", flush=True)


if __name__ == "__main__":
    cli.run(main)
