"""Evaluate a run's latest checkpoint: `python -m experiments.evaluate --workdir=W [--backend=B] [--export=F.npz]`.

Prints one JSON line with test_acc, test_loss, the checkpoint and its step.
`--export` also writes the parameters in the canonical .npz layout
(see `mlp_research.checkpoint.export_npz`), which every backend can load.
"""

from __future__ import annotations

import json

from absl import flags

from mlp_research import cli

flags.DEFINE_string("workdir", None, "Work directory of a run (holds checkpoints/).", required=True)
flags.DEFINE_string("export", None, "Also write the parameters to this .npz file (canonical layout).")
flags.DEFINE_enum("split", "test", ["test", "train", "validation"], "Split to evaluate.")
flags.DEFINE_string("data_dir", None, "Override the data directory stored in the checkpoint.")
flags.DEFINE_string("backend", None, "Evaluate in this backend (default: the one that wrote the checkpoint).")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    from mlp_research.run.evaluation import evaluate_checkpoint

    result = evaluate_checkpoint(FLAGS.workdir, split=FLAGS.split, data_dir=FLAGS.data_dir, export=FLAGS.export,
                                 backend=FLAGS.backend)
    print(json.dumps(result))


if __name__ == "__main__":
    cli.run(main)
