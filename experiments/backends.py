"""List the registered backends: `python -m experiments.backends`.

Reads the entry-point group `mlp_research.backends`; for each backend prints
its package, framework version and whether it loads (with the error if not:
a plugin that fails, even by calling sys.exit at import, is one row, and the
others are still listed). Exit code 0 when every backend loads, 1 otherwise.
"""

from __future__ import annotations

import json
import sys

from absl import flags

from mlp_research import cli

flags.DEFINE_boolean("json", False, "Print one JSON object per backend instead of a table.")
flags.DEFINE_boolean("load", True, "Import each backend to report its framework version (--noload: metadata only).")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    from mlp_research.backends import registry as backends

    if FLAGS.load:
        rows = backends.status()
    else:
        rows = [{"backend": i.name, "package": i.distribution, "package_version": i.distribution_version,
                 "entry_point": i.target} for i in backends.available().values()]
    if FLAGS.json:
        for row in rows:
            print(json.dumps(row))
    else:
        widths = [max([len(str(row[key])) for row in rows] + [len(key)]) for key in ("backend", "package")]
        for row in rows:
            state = ("loads, " + row["framework_version"]) if row.get("loads") else (row.get("error") or "not loaded")
            print(f"{row['backend']:<{widths[0]}}  {row['package']:<{widths[1]}}  {row['package_version']:<10} {state}")
    if FLAGS.load and not all(row["loads"] for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    cli.run(main)
