"""Train one configuration, or a vmapped group of them.

    python -m experiments.train [--config=FILE] [--flag=value ...] [--vmap=FIELD:V1,V2 ...]

Writes metrics.jsonl, summary.json, curves.png, TensorBoard events and checkpoints to --workdir;
with --vmap, each member writes those to its own sub-directory (`W/lr=0.05/`) and W gets the group's summary.
"""

from __future__ import annotations

import os

from absl import flags

import mlp_research
from mlp_research import cli
from mlp_research.run import members as members_lib

cli.define_config_flags(config_file=os.path.join(os.path.dirname(__file__), "configs", "default.py"))
flags.DEFINE_string("workdir", None, "Output directory (default: runs/<model>-<time>). A workdir with a "
                    "checkpoint resumes from it.")
flags.DEFINE_boolean("restart", False, "Discard the workdir's checkpoints and outputs and start over.")
flags.DEFINE_multi_string("vmap", [], "FIELD:V1,V2,... trains these values of FIELD together in one vmapped "
                          f"program ({', '.join(members_lib.VMAP_FIELDS)}); repeat for a product, e.g. "
                          "--vmap=lr:0.05,0.1 --vmap=seed:0,1. Each member writes to WORKDIR/FIELD=VALUE/.")
cli.define_launch_flags()  # --distributed, --coordinator_address, --num_processes, --process_id
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    config = cli.config_from_flags()
    launch = cli.launch_from_flags()  # a partial launcher environment is refused before any write
    axes = members_lib.parse_vmap(FLAGS.vmap)
    workdir = cli.workdir_from_flag(FLAGS.workdir, config)
    # The front door loads the backend's framework only now, after every flag check.
    if axes:
        group = mlp_research.train_group(config, workdir, axes, restart=FLAGS.restart, launch=launch)
        results = list(group.members.values())
    else:
        results = [mlp_research.train_and_evaluate(config, workdir, restart=FLAGS.restart, launch=launch)]
    for result in results:
        if result.summary["process_index"] == 0:
            print(cli.done_line(result.summary, result.workdir, result.summary.get("group", {}).get("member", "")))


if __name__ == "__main__":
    cli.run(main)
