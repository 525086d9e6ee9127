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
import json
import os
import time

from benchmarks.book import idx, loop, orders

RESULTS = os.path.join(os.path.dirname(__file__), "results", "factors")
SEEDS = list(range(10))

# name -> (what it tests, models, the variant's settings; everything else is the project's default)
FACTORS: dict[str, tuple[str, tuple[str, ...], dict]] = {
    "data_order": ("the book's JAX loader: fixed contiguous batches, only their order reshuffled each epoch "
                   "(short batch anywhere), against reshuffled examples", ("mlp_scratch", "mlp"),
                   {"order": "fixed_batches"}),
    "data_order_composition": ("fixed batches but the short batch kept last: the batch composition alone",
                               ("mlp_scratch", "mlp"), {"order": "fixed_batches_short_last"}),
    "data_order_short_batch_position": ("reshuffled examples but the short batch (96) at a random step instead of "
                                        "just before the evaluation: its position alone", ("mlp_scratch", "mlp"),
                                        {"order": "examples_short_random"}),
    "init_torch_default": ("PyTorch's nn.Linear default init (weights and biases U(+-1/sqrt(fan_in))) for the "
                           "concise model, against Flax's lecun_normal kernel and zero bias", ("mlp",),
                           {"init": "torch_default"}),
}


def condition_path(setting: loop.Setting) -> str:
    return os.path.join(RESULTS, f"{setting.model}__order={setting.order}__init={setting.init}.json")


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
    out = {"setting": vars(setting) if hasattr(setting, "__dict__") else setting.__dict__, "seeds": seeds,
           "wall_seconds": time.perf_counter() - start, "runs": runs,
           "command": f".venv/bin/python -m benchmarks.book.factors --model={setting.model} --order={setting.order} "
                      f"--init={setting.init}"}
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
    p.add_argument("--factor", choices=[*FACTORS, "all", "baseline"], default=None)
    p.add_argument("--model", choices=["mlp_scratch", "mlp"], default="mlp_scratch")
    p.add_argument("--order", choices=orders.ORDERS, default="examples")
    p.add_argument("--init", choices=loop.INITS, default="project")
    p.add_argument("--seeds", type=int, default=len(SEEDS), help="seeds 0..N-1")
    p.add_argument("--rerun", action="store_true")
    args = p.parse_args(argv)
    seeds = list(range(args.seeds))
    if args.factor == "all":
        for name in FACTORS:
            run_factor(name, seeds, args.rerun)
    elif args.factor == "baseline":
        for model in ("mlp_scratch", "mlp"):
            run_condition(loop.Setting(model=model), seeds, args.rerun)
    elif args.factor:
        run_factor(args.factor, seeds, args.rerun)
    else:
        run_condition(loop.Setting(model=args.model, order=args.order, init=args.init), seeds, args.rerun)


if __name__ == "__main__":
    main()
