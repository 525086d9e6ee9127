"""Run (or reuse) every exercise experiment and write W/REPORT.md.

  python -m experiments.report --workdir=runs/report --data_dir=../shared/data/fashion_mnist [--smoke] [--only=q1,q4]

Each question's settings live in experiments/exercises/q*_*.py (their `smoke` entry
is the CI size). Finished trials in the workdir are reused, so an interrupted
report resumes where it stopped; one line per trial shows progress.
"""

from __future__ import annotations

import glob
import os
import sys
import time

from absl import flags

from mlp_research import cli
from mlp_research.errors import ConfigError

flags.DEFINE_string("workdir", None, "Output directory for trials, figures and REPORT.md.", required=True)
flags.DEFINE_string("data_dir", "", "Fashion-MNIST IDX directory (default: $MLP_RESEARCH_DATA_DIR).")
flags.DEFINE_boolean("smoke", False, "Tiny sizes: every experiment in a few minutes (for CI).")
flags.DEFINE_string("only", "", "Comma-separated questions to run, e.g. q1,q4 (default: all ten).")
flags.DEFINE_boolean("synthetic", False, "Use the synthetic stand-in data instead of Fashion-MNIST.")
FLAGS = flags.FLAGS

EXERCISES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "exercises")
ORDER = [f"q{i}" for i in range(1, 11)]


def experiment_files() -> dict[str, str]:
    files = {}
    for path in glob.glob(os.path.join(EXERCISES, "q*_*.py")):
        files[os.path.basename(path).split("_", 1)[0]] = path
    return files


def main(argv: list[str]) -> None:
    files = experiment_files()
    only = [q.strip() for q in FLAGS.only.split(",") if q.strip()] or ORDER
    unknown = [q for q in only if q not in files]
    if unknown:
        raise ConfigError(f"--only: unknown question(s) {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    data_dir = FLAGS.data_dir or os.environ.get("MLP_RESEARCH_DATA_DIR", "")
    dataset = "synthetic" if FLAGS.synthetic else "fashion_mnist"
    if dataset == "fashion_mnist" and not (data_dir and os.path.isdir(data_dir)):
        raise ConfigError("--data_dir: Fashion-MNIST not found; pass --data_dir, set MLP_RESEARCH_DATA_DIR, "
                          "or use --synthetic")
    from mlp_research.exercises import report
    from mlp_research.exercises.common import Context, load_experiment
    from mlp_research.exercises.questions import RUNNERS

    os.makedirs(FLAGS.workdir, exist_ok=True)
    ctx = Context(workdir=FLAGS.workdir, dataset=dataset, data_dir=os.path.abspath(data_dir) if data_dir else "",
                  smoke=FLAGS.smoke, log=lambda line: print(line, flush=True))
    start = time.perf_counter()
    sections, failures = [], {}
    for qid in ORDER:
        if qid not in only:  # keep the section an earlier run stored, without rerunning it
            stored = report.load_section(FLAGS.workdir, qid)
            if stored is not None:
                sections.append(stored)
            continue
        cfg = load_experiment(files[qid], FLAGS.smoke)
        t0 = time.perf_counter()
        print(f"== {qid}: {os.path.basename(files[qid])} ({'smoke' if FLAGS.smoke else 'full'})", flush=True)
        try:
            section = RUNNERS[qid](cfg, ctx)
            report.save_section(FLAGS.workdir, section)
            sections.append(section)
        except Exception as e:  # one failing question must not lose the others' report
            failures[qid] = f"{type(e).__name__}: {e}"
            print(f"== {qid} failed: {failures[qid]}", file=sys.stderr, flush=True)
            if os.environ.get("MLP_RESEARCH_RAISE"):
                raise
        print(f"== {qid} done in {time.perf_counter() - t0:.1f} s", flush=True)
    data = (f"Fashion-MNIST IDX files in {ctx.data_dir}" if dataset == "fashion_mnist" else
            "synthetic stand-in data (not Fashion-MNIST)")
    text = report.render_report(sections, failures, "smoke" if FLAGS.smoke else "full", data,
                                time.perf_counter() - start, ORDER)
    path = report.write_report(FLAGS.workdir, text)
    print(f"wrote {path} ({len(sections)} sections, {len(failures)} failed) in {time.perf_counter() - start:.1f} s")
    if failures:
        raise ExperimentFailed(f"{len(failures)} experiment(s) failed: {', '.join(failures)}")


class ExperimentFailed(cli.UserError):
    exit_code = 1


if __name__ == "__main__":
    cli.run(main)
