"""Run (or reuse) every exercise experiment and write W/REPORT.md and W/report.json.

  python -m experiments.report --data_dir=../shared/data/fashion_mnist [--workdir=runs/report] [--smoke]
      [--only=q1,q4] [--search_workers=2] [--publish=docs/exercises] [--book=PATH] [--estimate]

Each question is one module in experiments/exercises/ (its settings, with a
`smoke` entry for the CI size, and its measurement and answer). Finished trials
in the workdir are reused, so an interrupted report resumes where it stopped;
one line per trial shows progress, and long groups a heartbeat with elapsed and
remaining time. `--estimate` prints what a fresh run of each question trains
and measures, and its modelled time, without running anything. `--book` names
the book comparison's results (default: benchmarks/book/results/book.json when
present). `--publish=DIR` copies the report, report.json and its figures into
DIR (the committed docs/exercises/).
"""

from __future__ import annotations

import os
import sys
import time

from absl import flags

from mlp_research import cli
from mlp_research.config import MATMUL_PRECISIONS
from mlp_research.errors import ConfigError, UserError

flags.DEFINE_string("workdir", "runs/report", "Output directory for trials, figures, REPORT.md and report.json.")
flags.DEFINE_string("data_dir", "", "Fashion-MNIST IDX directory (default: $MLP_RESEARCH_DATA_DIR).")
flags.DEFINE_boolean("smoke", False, "Tiny sizes: every experiment in a few minutes (for CI).")
flags.DEFINE_string("only", "", "Comma-separated questions to run, e.g. q1,q4 (default: all ten).")
flags.DEFINE_boolean("synthetic", False, "Use the synthetic stand-in data instead of Fashion-MNIST.")
flags.DEFINE_integer("search_workers", 1, "Worker processes that share q5's study (1: search in this process).")
flags.DEFINE_string("publish", "", "Also copy REPORT.md, report.json and the figures into this directory.")
flags.DEFINE_string("book", "", "The book comparison's results JSON (default: benchmarks/book/results/book.json "
                    "when it exists).")
flags.DEFINE_boolean("estimate", False, "Print each question's planned work and modelled time; run nothing.")
flags.DEFINE_string("matmul_precision", "", "Matmul precision of every training run (default: "
                    "mlp_research.exercises.common.TRAINING_PRECISION).")
FLAGS = flags.FLAGS


class ExperimentFailed(UserError):
    exit_code = 1


def _check_flags(order: list[str]) -> tuple[list[str], str, str]:
    """Every refusal before anything is written: (questions to run, data_dir, dataset)."""
    only = [q.strip() for q in FLAGS.only.split(",") if q.strip()] or order
    unknown = [q for q in only if q not in order]
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
    if FLAGS.matmul_precision and FLAGS.matmul_precision not in MATMUL_PRECISIONS:
        raise ConfigError(f"--matmul_precision: choose one of {', '.join(MATMUL_PRECISIONS)}")
    data_dir = FLAGS.data_dir or os.environ.get("MLP_RESEARCH_DATA_DIR", "")
    dataset = "synthetic" if FLAGS.synthetic else "fashion_mnist"
    if dataset == "fashion_mnist" and not FLAGS.estimate and not (data_dir and os.path.isdir(data_dir)):
        raise ConfigError("--data_dir: Fashion-MNIST not found; pass --data_dir, set MLP_RESEARCH_DATA_DIR, "
                          "or use --synthetic")
    return only, data_dir, dataset


def main(argv: list[str]) -> None:
    from experiments.exercises import ORDER, settings
    from mlp_research.exercises import book
    from mlp_research.exercises.common import TRAINING_PRECISION, Context
    from mlp_research.exercises.report import REPORT_LOCK
    from mlp_research.run.workdir import WorkdirLock

    only, data_dir, dataset = _check_flags(ORDER)
    book_path = book.find(FLAGS.book)
    book_data = book.load(book_path) if book_path else None  # refused, like the flags, before anything is written
    ctx = Context(workdir=FLAGS.workdir, dataset=dataset, data_dir=os.path.abspath(data_dir) if data_dir else "",
                  smoke=FLAGS.smoke, log=lambda line: print(line, flush=True), search_workers=FLAGS.search_workers,
                  matmul_precision=FLAGS.matmul_precision or TRAINING_PRECISION)
    configs = {q: settings(q, FLAGS.smoke) for q in only}
    if FLAGS.estimate:
        return _estimate(only, configs, ctx)
    os.makedirs(FLAGS.workdir, exist_ok=True)
    with WorkdirLock(FLAGS.workdir, name=REPORT_LOCK):  # a second report on this workdir exits 6, writing nothing
        _run(only, configs, ctx, dataset, data_dir, (book_path, book_data))


def _run(only: list[str], configs: dict[str, dict], ctx, dataset: str, data_dir: str, book_file: tuple) -> None:
    """Every question in `only` (the others' stored sections reused), then REPORT.md and report.json."""
    from experiments.exercises import ORDER, question
    from mlp_research.exercises import book, report
    from mlp_research.exercises.plan import as_plan

    book_path, book_data = book_file
    seen: set[tuple[str, str]] = set()
    for qid in only:  # pending work of every question (a trial two questions share counts once), for the clock
        try:
            ctx.clock.plan(qid, as_plan(question(qid).plan(configs[qid], ctx)).work(seen, only_pending=True))
        except Exception as e:  # noqa: BLE001 -- a plan is an estimate; the run reports real errors
            print(f"== {qid}: no time estimate ({type(e).__name__}: {e})", flush=True)
    sections, failures = [], {}
    if book_data is not None:
        sections.append(book.section(book_data, book_path, ctx))
    for qid in ORDER:
        if qid not in only:  # keep the section an earlier run stored, without rerunning it
            stored = report.load_section(FLAGS.workdir, qid)
            if stored is not None:
                sections.append(stored)
            continue
        section = _run_question(qid, question(qid), configs[qid], ctx, failures)
        if section is not None:
            report.save_section(FLAGS.workdir, section)
            sections.append(section)
    order = (["book"] if book_path else []) + ORDER
    _write(report, sections, failures, dataset, data_dir, ctx.clock.elapsed(), order)
    if failures:
        raise ExperimentFailed(f"{len(failures)} experiment(s) failed: {', '.join(failures)}")


def _run_question(qid: str, module, cfg: dict, ctx, failures: dict[str, str]):
    """One question's section, timed; a failure is recorded (one failing question must not lose the others)."""
    t0 = time.perf_counter()
    print(f"== {qid}: {module.__name__} ({'smoke' if FLAGS.smoke else 'full'}); " + ctx.clock.describe(), flush=True)
    section = None
    try:
        section = module.section(cfg, ctx)
        section.seconds = time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001 -- reported in the report and the exit status
        failures[qid] = f"{type(e).__name__}: {' '.join(str(e).split())}"
        print(f"== {qid} failed: {failures[qid]}", file=sys.stderr, flush=True)
        if os.environ.get("MLP_RESEARCH_RAISE"):
            raise
    ctx.clock.finish(qid)
    print(f"== {qid} done in {time.perf_counter() - t0:.1f} s; " + ctx.clock.describe(), flush=True)
    return section


def _estimate(only: list[str], configs: dict[str, dict], ctx) -> None:
    """The work a fresh run of each question does and its modelled seconds (`plan.Rates`), as a table."""
    from experiments.exercises import question
    from mlp_research.exercises.common import Table
    from mlp_research.exercises.plan import ESTIMATE_HEADERS, Rates, as_plan, estimate_rows
    from mlp_research.exercises.report import markdown_table

    rates = Rates()
    rows = estimate_rows([(q, as_plan(question(q).plan(configs[q], ctx))) for q in only], rates)
    print(markdown_table(Table(ESTIMATE_HEADERS, rows, f"{'smoke' if FLAGS.smoke else 'full'} size; est. s = "
                               f"{rates.run_seconds:g} s per driver call + {rates.step_seconds * 1e3:g} ms per "
                               f"training step + GFLOP / {rates.gflops:g} GFLOP/s + the timings' own estimates")))


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
