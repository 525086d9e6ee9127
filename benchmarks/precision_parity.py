"""What bfloat16 matmuls cost in accuracy: float32 and bfloat16 runs of the same seeds, side by side.

    python -m benchmarks.precision_parity --data_dir=../shared/data/fashion_mnist --out=runs/parity
    python -m benchmarks.precision_parity --data_dir=... --preset=report_best --models=mlp
    python -m benchmarks.precision_parity --data_dir=... --backends=torch,tensorflow

For each backend and model, every seed trains twice, once per precision, with
everything else equal (the chapter's defaults, or the exercise report's best
configuration with `--preset=report_best`: the flags of `q5.best.command` in
docs/exercises/report.json). The same seed means the same initialisation and
data order, so the per-seed difference bfloat16 - float32 is the paired
statistic: its mean and 95% interval answer "what does bfloat16 cost", the
mean and interval of each side say how much seeds alone move the result.
A backend that trains vmapped groups (JAX) trains the seeds of one precision as
one group; other backends run them one by one. Finished runs are reused from their work directories, so an
interrupted invocation continues. Writes parity.json and parity.md to --out.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
from typing import Any

from absl import app, flags

from mlp_research import hardware, stats
from mlp_research.backends import registry
from mlp_research.config import Config
from mlp_research.files import atomic_write
from mlp_research.run import driver
from mlp_research.run import members as members_lib

flags.DEFINE_string("data_dir", os.environ.get("MLP_RESEARCH_DATA_DIR", ""), "Fashion-MNIST IDX directory.")
flags.DEFINE_string("out", "runs/parity", "Output directory (run directories, parity.json, parity.md).")
flags.DEFINE_list("backends", ["jax"], "Backends to compare (each must declare bfloat16).")
flags.DEFINE_list("models", ["mlp_scratch", "mlp"], "Models (the preset's model when it names one).")
flags.DEFINE_integer("seeds", 5, "Seeds 0..N-1 per precision.")
flags.DEFINE_enum("preset", "chapter", ["chapter", "report_best"], "chapter: the defaults (784-256-10, SGD 0.1, "
                  "batch 256, 10 epochs); report_best: the exercise report's chosen configuration.")
flags.DEFINE_string("report", "docs/exercises/report.json", "The report whose q5.best.command report_best uses.")
flags.DEFINE_integer("max_epochs", 0, "Override the epochs (0: the preset's).")
flags.DEFINE_boolean("quick", False, "Synthetic data (2,000 / 500 examples), 1 epoch: checks the harness only.")
FLAGS = flags.FLAGS

PRECISIONS = ("default", "bfloat16")
# Flags of a command that say where or which seed, not what is trained.
_NOT_SETTINGS = {"data_dir", "workdir", "seed", "matmul_precision", "compilation_cache_dir"}


def preset_settings(preset: str, report_path: str) -> dict[str, str]:
    """The flat settings of a preset: none for the chapter, `q5.best.command`'s flags for report_best."""
    if preset == "chapter":
        return {}
    with open(report_path) as f:
        command = json.load(f)["q5"]["best"]["command"]
    settings = {}
    for word in shlex.split(command):
        name, sep, value = word.removeprefix("--").partition("=")
        if word.startswith("--") and sep and name not in _NOT_SETTINGS:
            settings[name] = value
    return settings


def train_seeds(config: Config, seeds: int, workdir: str) -> list[dict]:
    """Every seed of `config` (resumed or reused where its run exists); summaries in seed order."""
    if registry.load(config.backend).trains_groups:  # one program, each member bit-identical to its single run
        axes = {"seed": [str(s) for s in range(seeds)]}
        return driver.train_group(members_lib.expand(config, axes, workdir))
    return [driver.train_and_evaluate(config.replace(seed=s), os.path.join(workdir, f"seed={s}"))
            for s in range(seeds)]


def compare(backend: str, model: str, settings: dict[str, str]) -> dict[str, Any]:
    """Both precisions for one backend and model: per-seed accuracies, intervals, the paired difference."""
    data = ({"dataset": "synthetic", "synthetic_train_size": 2000, "synthetic_test_size": 500, "max_epochs": 1}
            if FLAGS.quick else {"data_dir": FLAGS.data_dir})
    base = Config.from_dict({**Config().as_dict(), "model": model, **settings, "backend": backend, **data,
                             "progress": False, "plot": False})
    if FLAGS.max_epochs:
        base = base.replace(max_epochs=FLAGS.max_epochs)
    sides: dict[str, Any] = {}
    for precision in PRECISIONS:
        workdir = os.path.join(FLAGS.out, FLAGS.preset, backend, base.model, precision)
        print(f"{backend} {base.model} {precision}: {FLAGS.seeds} seeds -> {workdir}", flush=True)
        summaries = train_seeds(base.replace(matmul_precision=precision), FLAGS.seeds, workdir)
        accuracies = [s["final"]["val_acc"] for s in summaries]
        sides[precision] = {"test_acc": accuracies, **stats.interval(accuracies).as_dict(),
                            "steady_epoch_seconds": statistics.median(s["steady_epoch_seconds"] for s in summaries)}
    difference = stats.paired_difference(sides["bfloat16"]["test_acc"], sides["default"]["test_acc"])
    return {"backend": backend, "model": base.model, "config": {**base.as_dict(), "matmul_precision": None},
            "float32": sides["default"], "bfloat16": sides["bfloat16"],
            "difference": {**difference.as_dict(), "p": stats.paired_p(sides["bfloat16"]["test_acc"],
                                                                       sides["default"]["test_acc"]),
                           "unpaired": stats.welch(sides["bfloat16"]["test_acc"],
                                                   sides["default"]["test_acc"]).difference.as_dict()},
            "speed": sides["bfloat16"]["steady_epoch_seconds"] / sides["default"]["steady_epoch_seconds"]}


def _cell(side: dict) -> str:
    low, high = side["ci95"]
    return f"{side['mean']:.4f} [{low:.4f}, {high:.4f}]"


def markdown(rows: list[dict]) -> str:
    lines = [f"Preset {FLAGS.preset}, {FLAGS.seeds} seeds per precision, final test accuracy (mean [95% CI]); "
             f"difference = bfloat16 - float32 paired by seed. CPU: {hardware.label()}", "",
             "| backend | model | float32 | bfloat16 | difference [95% CI] | paired p | epoch time bf16/f32 |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        d = r["difference"]
        lines.append(f"| {r['backend']} | {r['model']} | {_cell(r['float32'])} | {_cell(r['bfloat16'])} | "
                     f"{d['mean']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] | {d['p']:.2f} | "
                     f"{r['speed']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    if not FLAGS.data_dir and not FLAGS.quick:
        raise SystemExit("error: --data_dir: the Fashion-MNIST IDX directory is needed")
    settings = preset_settings(FLAGS.preset, FLAGS.report)
    models = [settings.pop("model")] if "model" in settings else FLAGS.models
    rows = [compare(backend, model, settings) for backend in FLAGS.backends for model in models]
    os.makedirs(FLAGS.out, exist_ok=True)
    name = f"parity_{FLAGS.preset}"
    atomic_write(os.path.join(FLAGS.out, f"{name}.json"),
                 json.dumps({"preset": FLAGS.preset, "seeds": FLAGS.seeds, "hardware": hardware.describe(),
                             "rows": rows}, indent=1))
    table = markdown(rows)
    atomic_write(os.path.join(FLAGS.out, f"{name}.md"), table)
    print(table)


if __name__ == "__main__":
    app.run(main)
