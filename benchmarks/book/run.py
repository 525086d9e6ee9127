"""Run the book's own chapter code N times and store every run: `python -m benchmarks.book.run`.

    benchmarks/book/.venv/bin/python -m benchmarks.book.run --framework=jax --model=mlp_scratch --runs=10 \
        --out=benchmarks/book/results/book_jax_mlp_scratch.json

Each run is its own process (`--one`), seeded with its seed (see chapter_jax / chapter_torch for what the seed
drives), so runs are independent and a crash loses one run only. The file holds per run the final test
accuracy both ways (the book's mean over the 40 test batches, and correct / 10,000), the per-epoch curves,
the seed and the wall time; and the date, the CPU model, the library versions and the data's checksums.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata as md
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from benchmarks.book import idx, stats

PACKAGES = ("d2l", "jax", "jaxlib", "flax", "optax", "tensorflow_cpu", "tensorflow-datasets", "torch", "numpy")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() is empty on Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict:
    """Where and with what the runs were measured."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "versions": versions, "data_dir": idx.data_dir(), "data_sha256": idx.sha256_files()}


def run_one(framework: str, model: str, seed: int, epochs: int, variant: str | None = None) -> dict:
    """One run in this process."""
    start = time.perf_counter()
    if framework == "jax":
        from benchmarks.book import chapter_jax as chapter
    elif framework == "torch":
        from benchmarks.book import chapter_torch as chapter
    else:
        raise SystemExit(f"--framework: jax or torch, not {framework!r}")
    result = chapter.run(model, seed, max_epochs=epochs, variant=variant)
    final = result["epochs"][-1]
    return {"seed": seed, "variant": variant, "final_test_acc": final["val_acc_batch_mean"],
            "final_test_acc_example_weighted": final["val_acc_example_weighted"],
            "wall_seconds": time.perf_counter() - start, **result}


def run_many(framework: str, model: str, seeds: list[int], epochs: int, variant: str | None = None) -> list[dict]:
    """Each seed in a fresh process; prints one line per finished run."""
    runs = []
    for seed in seeds:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
            path = tmp.name
        cmd = [sys.executable, "-m", "benchmarks.book.run", f"--framework={framework}", f"--model={model}",
               f"--epochs={epochs}", f"--one={seed}", f"--out={path}"] + ([f"--variant={variant}"] if variant else [])
        subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
        with open(path) as f:
            runs.append(json.load(f))
        os.unlink(path)
        r = runs[-1]
        print(f"{framework} {model} seed {seed}: test acc {r['final_test_acc']:.4f} (batch mean), "
              f"{r['final_test_acc_example_weighted']:.4f} (example-weighted), {r['wall_seconds']:.0f} s", flush=True)
    return runs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--framework", required=True, choices=["jax", "torch"])
    p.add_argument("--model", required=True, choices=["mlp_scratch", "mlp"])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--first_seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", required=True)
    p.add_argument("--variant", default=None, help="a one-piece change to the book's code: jax shuffle_examples, "
                                                   "torch drop_last (controlled experiments); default: none")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one is not None:
        result = run_one(args.framework, args.model, args.one, args.epochs, args.variant)
    else:
        seeds = list(range(args.first_seed, args.first_seed + args.runs))
        runs = run_many(args.framework, args.model, seeds, args.epochs, args.variant)
        result = {"source": "book", "framework": args.framework, "model": args.model, "epochs": args.epochs,
                  "variant": args.variant,
                  "command": " ".join([os.path.relpath(sys.executable), "-m", "benchmarks.book.run", *sys.argv[1:]]),
                  "accuracy": "final_test_acc: the book's number, the mean over the 40 test batches of each batch's "
                              "accuracy (last batch 16 examples); final_test_acc_example_weighted: correct / 10,000",
                  "environment": environment(), "runs": runs,
                  "summary": stats.summarize([r["final_test_acc"] for r in runs]),
                  "summary_example_weighted": stats.summarize([r["final_test_acc_example_weighted"] for r in runs])}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
