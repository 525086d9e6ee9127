"""Epoch time and achieved GFLOP/s of the core loop as the MLP grows in width and depth.

    python -m benchmarks.scaling --out=runs/scaling                 # widths 256..8192, depths 1..8
    python -m benchmarks.scaling --quick                            # a smoke run

Each point trains the concise MLP with SGD (batch 256) on synthetic data of Fashion-MNIST's shape
for a few epochs in this process through the driver; the steady epoch is the median after the first,
scaled to 60,000 examples. GFLOP/s is the run's own `achieved_gflops` (summary.json), whose FLOP count
is `ModelSpec.train_flops_per_example()`, the one definition `benchmarks.epoch_time` uses too.
"""

from __future__ import annotations

import json
import os
import tempfile

from absl import app, flags
from absl import logging as absl_logging

from mlp_research.files import atomic_write

flags.DEFINE_list("widths", ["256", "512", "1024", "2048", "4096", "8192"], "Hidden widths (one hidden layer).")
flags.DEFINE_list("depths", ["1", "2", "4", "8"], "Numbers of hidden layers (width --depth_width).")
flags.DEFINE_integer("depth_width", 256, "Width of each hidden layer in the depth sweep.")
flags.DEFINE_integer("examples", 12_800, "Synthetic training examples per epoch.")
flags.DEFINE_integer("epochs", 3, "Epochs per point (the first is warm-up).")
flags.DEFINE_boolean("quick", False, "Two small points only.")
flags.DEFINE_string("out", "runs/scaling", "Output directory.")
FLAGS = flags.FLAGS


def measure(hiddens: tuple[int, ...]) -> dict:
    """One point: a short driver run of the concise MLP with these hidden widths."""
    from mlp_research.config import Config
    from mlp_research.run.driver import train_and_evaluate

    config = Config().replace(
        model="mlp", num_hiddens=hiddens, dataset="synthetic", synthetic_train_size=FLAGS.examples,
        synthetic_test_size=1000, max_epochs=FLAGS.epochs, progress=False, checkpoint_every_epochs=0,
        keep_checkpoints=1,
    )
    with tempfile.TemporaryDirectory() as workdir:
        summary = train_and_evaluate(config, workdir)
    steady = summary["steady_epoch_seconds"]
    return {
        "num_hiddens": list(hiddens),
        "params": config.num_params(),
        "epoch_seconds_60k": steady * 60_000 / FLAGS.examples,
        "gflop_per_epoch_60k": config.train_flops_per_example() * 60_000 / 1e9,
        "examples_per_second": FLAGS.examples / steady,
        "gflops": summary["achieved_gflops"],
        "compile_seconds": summary["compile_seconds"],
        "device": summary["device"]["kind"],
    }


def main(argv: list[str]) -> None:
    absl_logging.set_verbosity(absl_logging.WARNING)  # keep the output to the table, not Orbax's progress
    widths = [256, 1024] if FLAGS.quick else [int(w) for w in FLAGS.widths]
    depths = [1, 2] if FLAGS.quick else [int(d) for d in FLAGS.depths]
    points = {"width": [], "depth": []}
    for w in widths:
        points["width"].append(measure((w,)))
        print(json.dumps(points["width"][-1]), flush=True)
    for d in depths:
        points["depth"].append(measure((FLAGS.depth_width,) * d))
        print(json.dumps(points["depth"][-1]), flush=True)
    os.makedirs(FLAGS.out, exist_ok=True)
    device = points["width"][0]["device"]
    atomic_write(os.path.join(FLAGS.out, "scaling.json"),
                 json.dumps({"device": device, "examples": FLAGS.examples, **points}, indent=2))
    lines = [f"Device: {device}; concise MLP, SGD, batch 256; epoch time scaled to 60,000 examples", "",
             "| hidden layers | params | GFLOP per epoch | epoch (s) | examples/s | GFLOP/s | compile (s) |",
             "|---|---|---|---|---|---|---|"]
    for p in points["width"] + points["depth"]:
        lines.append(f"| {'x'.join(map(str, p['num_hiddens']))} | {p['params']:,} | {p['gflop_per_epoch_60k']:.0f} | "
                     f"{p['epoch_seconds_60k']:.3f} | "
                     f"{p['examples_per_second']:,.0f} | {p['gflops']:.0f} | {p['compile_seconds']:.2f} |")
    table = "\n".join(lines) + "\n"
    atomic_write(os.path.join(FLAGS.out, "scaling.md"), table)
    print(table)


if __name__ == "__main__":
    app.run(main)
