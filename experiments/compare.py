"""Compare runs: `python -m experiments.compare W1 W2 'runs/lr-*' [--out=DIR]`.

Prints a markdown table, one row per run: its status, the config fields in
which the runs differ, final and best val_acc, final train_loss, steady epoch
time and backend. A vmap group directory stands for its members. `--out=DIR`
also writes DIR/compare.md (the table and the fields all runs share) and
DIR/compare.png (val_acc and train_loss per epoch, one line per run).
"""

from __future__ import annotations

import sys

from absl import flags

from mlp_research import cli
from mlp_research.errors import ConfigError

flags.DEFINE_string("out", None, "Also write compare.md and compare.png to this directory.")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    from mlp_research.run import compare

    paths = argv[1:]  # the words after the program name that are not flags
    if not paths:
        raise ConfigError("no runs given: python -m experiments.compare W1 W2 ... [--out=DIR]")
    runs = compare.find_runs(paths)
    if not runs:
        raise ConfigError(f"nothing to compare: no run in {' '.join(paths)}")
    print(compare.markdown_table(runs, compare.differing_fields(runs)), end="")
    if FLAGS.out:
        written = compare.write_outputs(runs, FLAGS.out)
        print(f"wrote {' and '.join(written)}", file=sys.stderr)


if __name__ == "__main__":
    cli.run(main, positional=True)
