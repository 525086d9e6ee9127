"""Train one configuration: `python -m experiments.train [--config=FILE] [--flag=value ...]`.

Writes metrics.jsonl, summary.json, curves.png and TensorBoard events to --workdir.
"""

from __future__ import annotations

import os
import time

from absl import flags

from mlp_research import cli
from mlp_research.jax_backend import distributed
from mlp_research.run.workdir import check_workdir

cli.define_config_flags()
flags.DEFINE_string("workdir", None, "Output directory (default: runs/<model>-<time>). A workdir with a "
                    "checkpoint resumes from it.")
flags.DEFINE_boolean("restart", False, "Discard the workdir's checkpoints and outputs and start over.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for multi-process runs "
                    "(or $JAX_COORDINATOR_ADDRESS).")
flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process's index (0 writes the outputs).")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    config = cli.config_from_flags()
    distributed.check_args(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    workdir = check_workdir(
        FLAGS.workdir or os.path.join("runs", f"{config.model.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    )
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    from mlp_research.run.driver import train_and_evaluate  # after flag checks: imports JAX

    summary = train_and_evaluate(config, workdir, restart=FLAGS.restart)
    final = summary["final"]
    if summary["process_index"] != 0:
        return
    print(
        f"done: val_acc {final['val_acc']:.4f}  val_loss {final['val_loss']:.4f}  train_loss {final['train_loss']:.4f}  "
        f"total {summary['total_seconds']:.1f} s  -> {workdir}"
    )


if __name__ == "__main__":
    cli.run(main)
