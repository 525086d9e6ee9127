"""Factor experiments: one difference between the book's code and the project's at a time, 10 seeds each.

    .venv/bin/python -m benchmarks.book.factors --factor=data_order            # one factor, both models
    .venv/bin/python -m benchmarks.book.factors --factor=all                   # every factor

Runs in the project's environment (.venv) through `loop.train_seeds`. Each condition (model, data order,
init) is stored once as results/factors/<model>__order=<o>__init=<i>.json and reused by every factor that
needs it (`--rerun` trains it again). A factor compares its variant with the harness baseline (the project's
choices); `results.load` turns the stored runs into effects with intervals.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

from benchmarks.book import conditions, idx, loop, orders
from benchmarks.book.conditions import FACTORS

RESULTS = conditions.RESULTS
SEEDS = list(range(10))

def condition_path(setting: loop.Setting) -> str:
    return os.path.join(RESULTS, conditions.name(**dataclasses.asdict(setting)) + ".json")


def run_condition(setting: loop.Setting, seeds: list[int], rerun: bool = False) -> dict:
    """Train (or reuse) one condition's seeds and store them."""
    path = condition_path(setting)
    if os.path.exists(path) and not rerun:
        with open(path) as f:
            stored = json.load(f)
        if stored["seeds"] == seeds:
            return stored
    start = time.perf_counter()
    runs = loop.train_seeds(setting, seeds, idx.load_split("train"), idx.load_split("test"))
    for r in runs:
        r["final_test_acc_example_weighted"] = r["epochs"][-1]["val_acc_example_weighted"]
        r["final_test_acc_batch_mean"] = r["epochs"][-1]["val_acc_batch_mean"]
    extras = (" --short_batch=scaled" if setting.short_batch != "mean" else "") + (" --probe" if setting.probe else "")
    out = {"setting": dataclasses.asdict(setting), "seeds": seeds, "wall_seconds": time.perf_counter() - start,
           "runs": runs, "command": f".venv/bin/python -m benchmarks.book.factors --model={setting.model} "
                                    f"--order={setting.order} --init={setting.init}{extras}"}
    os.makedirs(RESULTS, exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    accs = [round(r["final_test_acc_example_weighted"], 4) for r in runs]
    print(f"{os.path.basename(path)}: {accs} ({out['wall_seconds']:.0f} s)", flush=True)
    return out


def run_factor(name: str, seeds: list[int], rerun: bool = False) -> None:
    """The baseline and the variant of one factor, for each of its models."""
    _, models, variant = FACTORS[name]
    for model in models:
        run_condition(loop.Setting(model=model), seeds, rerun)
        run_condition(loop.Setting(model=model, **variant), seeds, rerun)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--factor", choices=[*FACTORS, "all", "baseline", "probe"], default=None)
    p.add_argument("--model", choices=["mlp_scratch", "mlp"], default="mlp_scratch")
    p.add_argument("--order", choices=orders.ORDERS, default="examples")
    p.add_argument("--init", choices=loop.INITS, default="project")
    p.add_argument("--short_batch", choices=["mean", "scaled"], default="mean")
    p.add_argument("--probe", action="store_true", help="also evaluate before each epoch's last update")
    p.add_argument("--seeds", type=int, default=len(SEEDS), help="seeds 0..N-1")
    p.add_argument("--rerun", action="store_true")
    args = p.parse_args(argv)
    seeds = list(range(args.seeds))
    if args.factor == "all":
        for name in FACTORS:
            run_factor(name, seeds, args.rerun)
    elif args.factor in ("baseline", "probe"):
        for model in ("mlp_scratch", "mlp"):
            run_condition(loop.Setting(model=model, probe=args.factor == "probe"), seeds, args.rerun)
    elif args.factor:
        run_factor(args.factor, seeds, args.rerun)
    else:
        setting = loop.Setting(model=args.model, order=args.order, init=args.init, short_batch=args.short_batch,
                               probe=args.probe)
        run_condition(setting, seeds, args.rerun)


if __name__ == "__main__":
    main()
