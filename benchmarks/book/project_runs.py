"""The project's default for one chapter model, 10 seeds as one vmapped group, stored beside the book's runs.

    .venv/bin/python -m benchmarks.book.project_runs --model=mlp_scratch \
        --out=benchmarks/book/results/project_mlp_scratch.json

Runs `python -m experiments.train --data_dir=... --model=M --vmap=seed:0,...,9 --workdir=W` (each member is
bit-identical to its single run; a finished workdir is reused as it stands) and collects each member's
`metrics.jsonl` (per-epoch curves) and `summary.json` (versions, commit). The project evaluates the whole test
split at the end of each epoch; val_acc there is correct / 10,000 (example-weighted).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from benchmarks.book import idx, stats
from benchmarks.book.run import cpu_model


def train(model: str, seeds: list[int], workdir: str) -> list[str]:
    """Run (or resume, or reuse) the vmapped group; the command it ran."""
    cmd = [sys.executable, "-m", "experiments.train", f"--data_dir={idx.data_dir()}", f"--model={model}",
           "--vmap=seed:" + ",".join(map(str, seeds)), f"--workdir={workdir}"]
    subprocess.run(cmd, check=True)
    return cmd


def collect(workdir: str, seeds: list[int]) -> list[dict]:
    """Per seed: the per-epoch rows of metrics.jsonl and the final test accuracy."""
    runs = []
    for seed in seeds:
        member = os.path.join(workdir, f"seed={seed}")
        with open(os.path.join(member, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        with open(os.path.join(member, "summary.json")) as f:
            summary = json.load(f)
        runs.append({"seed": seed, "final_test_acc": rows[-1]["val_acc"], "epochs": rows,
                     "total_seconds": summary.get("total_seconds"), "versions": summary.get("versions"),
                     "code": summary.get("code")})
    return runs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, choices=["mlp_scratch", "mlp"])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--workdir", default=None, help="default runs/book/project_<model>")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    seeds = list(range(args.seeds))
    workdir = args.workdir or os.path.join("runs", "book", f"project_{args.model}")
    cmd = train(args.model, seeds, workdir)
    runs = collect(workdir, seeds)
    out = {"source": "project", "model": args.model, "command": " ".join([".venv/bin/python", *cmd[1:]]),
           "accuracy": "final_test_acc: val_acc of the last epoch, correct / 10,000 test images",
           "environment": {"cpu": cpu_model(), "cores": os.cpu_count(), "versions": runs[0]["versions"],
                           "code": runs[0]["code"], "data_sha256": idx.sha256_files()},
           "runs": runs, "summary": stats.summarize([r["final_test_acc"] for r in runs])}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    s = out["summary"]
    print(f"project {args.model}: {s['mean']:.4f} +- {s['std']:.4f} (n={s['n']})")


if __name__ == "__main__":
    main()
