"""Evaluate a run's checkpoint: `python -m experiments.evaluate --workdir=W [--checkpoint=best] [--backend=B]`.

Prints one JSON line with the split's accuracy and loss, the checkpoint and its step. `--export` also
writes the parameters in the canonical .npz layout (see `mlp_research.run.checkpoints.export_npz`),
which every backend can load.
"""

from __future__ import annotations

import json

from absl import flags

from mlp_research import cli

flags.DEFINE_string("workdir", None, "Work directory of a run (holds checkpoints/); a member's directory for a "
                    "vmapped group.", required=True)
flags.DEFINE_string("checkpoint", "latest", "Which checkpoint: latest (the newest readable), best (the best "
                    "val_acc, kept with --keep_best) or a step number.")
flags.DEFINE_string("export", None, "Also write the parameters to this .npz file (canonical layout).")
flags.DEFINE_enum("split", "test", ["test", "train", "validation"], "Split to evaluate.")
flags.DEFINE_string("data_dir", None, "Override the data directory stored in the checkpoint.")
flags.DEFINE_string("backend", None, "Evaluate in this backend (default: the one that wrote the checkpoint).")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    from mlp_research.run.evaluation import evaluate_checkpoint

    result = evaluate_checkpoint(FLAGS.workdir, split=FLAGS.split, data_dir=FLAGS.data_dir, export=FLAGS.export,
                                 backend=FLAGS.backend, checkpoint=FLAGS.checkpoint)
    print(json.dumps(result))


if __name__ == "__main__":
    cli.run(main)
