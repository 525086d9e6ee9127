"""Check an installed backend against the contract: `python -m mlp_research.testing.check_backend NAME`.

Prints one line per check (PASS, FAIL or SKIP, the check, the figure it
measured, and for a failure what is wrong), then a summary line. Exit code 0
when every applicable check passes, 1 otherwise, 2 for a bad command line
(an unknown backend, a broken plugin).

    python -m mlp_research.testing.check_backend torch
    python -m mlp_research.testing.check_backend mybackend --only=logits,training
    python -m mlp_research.testing.check_backend mlp_research.testing.example_backend:NumpyBackend
"""

from __future__ import annotations

import argparse
import re
import sys
import time

from mlp_research.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlp_research.testing.check_backend", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("backend", help="a registered backend name (python -m experiments.backends lists them), "
                        "or module:Class for a backend not installed yet")
    parser.add_argument("--only", default="", help="comma-separated prefixes of the checks to run")
    args = parser.parse_args(argv)
    from mlp_research.testing import kit as kit_lib

    try:
        kit = kit_lib.Kit(args.backend)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return ConfigError.exit_code
    prefixes = [p.strip() for p in re.split(r",(?![^\[]*\])", args.only) if p.strip()]  # not inside [...]
    counts = {"pass": 0, "fail": 0, "skip": 0}
    start = time.perf_counter()
    try:
        for case in kit_lib.all_cases():
            if prefixes and not case.name.startswith(tuple(prefixes)):
                continue
            outcome = kit_lib.run_case(case, kit)
            counts[outcome.status] += 1
            note = f"  -- {outcome.detail}" if outcome.detail else ""
            figure = f"  ({outcome.figure})" if outcome.figure else ""
            print(f"{outcome.status.upper():<4}  {case.name}{figure}{note}", flush=True)
    finally:
        kit.close()
    total = sum(counts.values())
    print(f"{kit.name}: {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped of {total} "
          f"checks in {time.perf_counter() - start:.0f} s", flush=True)
    return 1 if counts["fail"] or not counts["pass"] else 0


if __name__ == "__main__":
    sys.exit(main())
