"""Train one configuration, or a vmapped group of them.

    python -m experiments.train [--config=FILE] [--flag=value ...] [--vmap=FIELD:V1,V2 ...]


Writes metrics.jsonl, summary.json, curves.png, TensorBoard events and checkpoints to --workdir;
with --vmap, each member writes those to its own sub-directory (`W/lr=0.05/`) and W gets the group's summary.
"""

from __future__ import annotations

import os
import time

from absl import flags

from mlp_research import cli
from mlp_research.run import launchers
from mlp_research.run import members as members_lib
from mlp_research.run.workdir import check_workdir

cli.define_config_flags()
flags.DEFINE_string("workdir", None, "Output directory (default: runs/<model>-<time>). A workdir with a "
                    "checkpoint resumes from it.")
flags.DEFINE_boolean("restart", False, "Discard the workdir's checkpoints and outputs and start over.")
flags.DEFINE_multi_string("vmap", [], "FIELD:V1,V2,... trains these values of FIELD together in one vmapped "
                          f"program ({', '.join(members_lib.VMAP_FIELDS)}); repeat for a product, e.g. "
                          "--vmap=lr:0.05,0.1 --vmap=seed:0,1. Each member writes to WORKDIR/FIELD=VALUE/.")
launchers.define_flags(flags.FLAGS)  # --distributed, --coordinator_address, --num_processes, --process_id
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    config = cli.config_from_flags()
    launch = launchers.from_flags(FLAGS)  # a partial launcher environment is refused before any write
    axes = members_lib.parse_vmap(FLAGS.vmap)
    if FLAGS.workdir is None:
        workdir = os.path.join("runs", f"{config.model.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    else:
        workdir = FLAGS.workdir
    check_workdir(workdir)
    members = members_lib.expand(config, axes, workdir)
    from mlp_research.backends import registry
    from mlp_research.run import driver  # after the flag checks: imports the backend's framework later

    backend = registry.load(config.backend)
    backend.prepare(config)
    if launch.joins:
        launch = backend.join_processes(launch)  # returns the launch completed by the runtime
    with backend.guard():  # JAX: a lost peer ends a process in one line
        summaries = driver.train(members, workdir, axes=members_lib.typed_axes(members, axes),
                                 restart=FLAGS.restart, backend=backend, launch=launch.to_dict())
    if summaries[0]["process_index"] != 0:
        return
    for member, summary in zip(members, summaries):
        final = summary["final"]
        name = f" [{member.name}]" if member.name else ""
        state = "  diverged" if summary["diverged"] else ""
        print(f"done{name}: val_acc {final['val_acc']:.4f}  val_loss {final['val_loss']:.4f}  "
              f"train_loss {final['train_loss']:.4f}  total {summary['total_seconds']:.1f} s{state}  "
              f"-> {member.workdir}")


if __name__ == "__main__":
    cli.run(main)
