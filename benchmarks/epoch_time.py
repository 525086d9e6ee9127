"""Epoch time of the core loop against plain reference loops, on the same machine in one invocation.

    python -m benchmarks.epoch_time --data_dir=../shared/data/fashion_mnist --out=runs/bench
    python -m benchmarks.epoch_time --quick            # synthetic data, 2 epochs: a smoke run

Each case runs in its own subprocess (clean memory numbers, no shared caches):
- `core`: `experiments.train`'s loop (`train_and_evaluate`) with default flags, epoch time as it
  reports it (training plus the per-epoch evaluation of the test split; periodic checkpoints no
  more often than every 10 s, so a short run saves at the end).
- `core_save_each_epoch`: the same with an Orbax checkpoint after every epoch.
- `jax_plain`: a straightforward per-batch `jax.jit` step fed from host numpy batches,
  plus the same evaluation, i.e. what one writes first.
- `jax_plain_tuned`: the plain loop with the XLA:CPU flags the core sets; the difference between
  this and `core` is the loop itself.
- `torch_plain`: the same model in torch with tensors resident in memory, no DataLoader.
- `backend_torch`, `backend_tensorflow`, `backend_mxnet`: the `core` run trained by a plugin backend
  (not in the default list: `plugins/<name>/bench.py` compares each with its own framework's plain loop).
- `cli_cold` / `cli_warm`: the real command, `python -m experiments.train`, 10 epochs with default
  flags, timed from process start to exit: with an empty persistent compilation cache, then with
  the cache that run left (time to result).

Cases run in `--repeats` interleaved rounds (core, plain, core, plain, ...), so a slow spell of a
shared machine hits both sides of a comparison. Steady epoch = median over the epochs after the
first; a case's figure is the median over rounds, and "vs jax_plain" is the median of the per-round
ratios. Writes `bench.json` and `bench.md` to --out.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

flags.DEFINE_string("data_dir", os.environ.get("MLP_RESEARCH_DATA_DIR", ""), "Fashion-MNIST IDX directory.")
flags.DEFINE_integer("epochs", 6, "Epochs per case (the first is warm-up).")
flags.DEFINE_list("cases", ["core", "core_save_each_epoch", "jax_plain", "torch_plain", "cli_cold", "cli_warm"],
                  "Cases to run.")
flags.DEFINE_integer("repeats", 3, "Interleaved rounds of every case (1 with --quick).")
flags.DEFINE_integer("case_timeout", 300, "Seconds before a hung case is stopped and reported as failed.")
flags.DEFINE_list("models", ["mlp_scratch", "mlp"], "Models to time.")
flags.DEFINE_boolean("quick", False, "Synthetic data, 2 epochs: checks the harness, not the machine.")
flags.DEFINE_string("out", "runs/bench", "Output directory.")
flags.DEFINE_string("case", None, "Internal: run one case in this process and print its JSON.")
flags.DEFINE_string("model", "mlp_scratch", "Internal: the model of --case.")
FLAGS = flags.FLAGS

BATCH, LR = 256, 0.1
QUICK_EXAMPLES = 6_000


def _data_fields() -> dict:
    """The data of every case: real Fashion-MNIST, or synthetic data of its shape with --quick."""
    if FLAGS.quick:
        return {"dataset": "synthetic", "synthetic_train_size": QUICK_EXAMPLES, "synthetic_test_size": 1000}
    return {"data_dir": FLAGS.data_dir}


def _config(model: str):
    from mlp_research.config import Config

    # The default run as `experiments.train` does it.
    return Config().replace(model=model, max_epochs=FLAGS.epochs, progress=False, **_data_fields())


def _run_result(workdir: str, summary: dict, time_to_result: float) -> dict:
    """A case's figures from the run it left in `workdir`."""
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return {"epoch_seconds": [r["seconds"] for r in rows], "compile_seconds": summary["compile_seconds"],
            "time_to_result": time_to_result, "final_val_acc": summary["final"]["val_acc"],
            "device": summary["device"]["kind"]}


def _run_checked(args: list[str], what: str) -> subprocess.CompletedProcess:
    """Run a case's process; RuntimeError with its last stderr line if it fails."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=FLAGS.case_timeout)
    if done.returncode != 0:
        raise RuntimeError(f"case {what} failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    return done


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _device_peak_mib() -> float:
    """Peak accelerator memory of this process (NaN on a CPU), from whichever framework ran."""
    peaks = []
    if "jax" in sys.modules:
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            peaks.append(stats["peak_bytes_in_use"])
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        peaks.append(torch.cuda.max_memory_allocated())
    return max(peaks) / 2**20 if peaks else float("nan")


def case_core(model: str, **overrides) -> dict:
    from mlp_research.run.driver import train_and_evaluate

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        summary = train_and_evaluate(_config(model).replace(**overrides), workdir)
        return _run_result(workdir, summary, time.perf_counter() - t0)


def case_jax_plain(model: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from mlp_research.data import load_splits
    from mlp_research.jax_backend.models import build_model

    t0 = time.perf_counter()
    config = _config(model)
    splits = load_splits(config)
    net, tx = build_model(config.model), optax.sgd(LR)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28)))["params"]
    opt_state = tx.init(params)

    def loss_fn(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(net.apply({"params": p}, x), y).mean()

    @jax.jit
    def step(p, s, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    @jax.jit
    def eval_batch(p, x, y):
        logits = net.apply({"params": p}, x)
        return (optax.softmax_cross_entropy_with_integer_labels(logits, y).sum(), (logits.argmax(-1) == y).sum())

    x_train, y_train, x_test, y_test = splits.train.images, splits.train.labels, splits.test.images, splits.test.labels
    rng = np.random.default_rng(0)
    times, compile_seconds, acc = [], 0.0, 0.0
    for epoch in range(config.max_epochs):
        t = time.perf_counter()
        perm = rng.permutation(len(y_train))
        for i in range(0, len(perm), BATCH):
            idx = perm[i : i + BATCH]
            params, opt_state, loss = step(params, opt_state, x_train[idx], y_train[idx])
        correct = 0
        for i in range(0, len(y_test), BATCH):
            _, c = eval_batch(params, x_test[i : i + BATCH], y_test[i : i + BATCH])
            correct += int(c)
        acc = correct / len(y_test)
        times.append(time.perf_counter() - t)
        if epoch == 0:
            compile_seconds = float("nan")  # compiled inside the first epoch
    return {"epoch_seconds": times, "compile_seconds": compile_seconds, "time_to_result": time.perf_counter() - t0,
            "final_val_acc": acc, "device": jax.devices()[0].device_kind}


def case_torch_plain(model: str) -> dict:
    import numpy as np
    import torch
    from torch import nn

    from mlp_research.data import load_splits

    t0 = time.perf_counter()
    config = _config(model)
    splits = load_splits(config)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    x_train = torch.from_numpy(splits.train.images).to(device)
    y_train = torch.from_numpy(splits.train.labels.astype(np.int64)).to(device)
    x_test = torch.from_numpy(splits.test.images).to(device)
    y_test = torch.from_numpy(splits.test.labels.astype(np.int64)).to(device)
    loss_fn = nn.CrossEntropyLoss()
    times, acc = [], 0.0
    for _ in range(config.max_epochs):
        t = time.perf_counter()
        perm = torch.randperm(len(y_train), device=device)
        for i in range(0, len(perm), BATCH):
            idx = perm[i : i + BATCH]
            loss = loss_fn(net(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = float((net(x_test).argmax(-1) == y_test).float().mean())
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return {"epoch_seconds": times, "compile_seconds": 0.0, "time_to_result": time.perf_counter() - t0,
            "final_val_acc": acc, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}


def case_core_save_each_epoch(model: str) -> dict:
    """The core loop with an Orbax checkpoint after every epoch (no minimum interval)."""
    return case_core(model, checkpoint_min_seconds=0)


def case_jax_plain_tuned(model: str) -> dict:
    """The plain loop with the XLA:CPU flags the core sets (`CPU_XLA_FLAGS`): the like-for-like baseline."""
    from mlp_research.jax_backend.backend import tune_xla_cpu

    tune_xla_cpu()
    return case_jax_plain(model)


def _backend_case(backend: str):
    def case(model: str) -> dict:
        """The same driver and flags, trained by a plugin backend."""
        return case_core(model, backend=backend)

    return case


CASES = {"core": case_core, "core_save_each_epoch": case_core_save_each_epoch, "jax_plain": case_jax_plain,
         "jax_plain_tuned": case_jax_plain_tuned, "torch_plain": case_torch_plain, **{f"backend_{b}": _backend_case(b) for b in ("torch", "tensorflow", "mxnet")}}
# Cases that time `python -m experiments.train` itself; `cli_warm` reuses the cache `cli_cold` filled.
CLI_CASES = ("cli_cold", "cli_warm")


def run_cli_case(case: str, model: str, cache_dir: str) -> dict:
    """Time the training command from process start to exit, with a cold or a warm compilation cache."""
    if case == "cli_cold":
        shutil.rmtree(cache_dir, ignore_errors=True)
    data = [f"--{name}={value}" for name, value in _data_fields().items()]
    with tempfile.TemporaryDirectory() as workdir:
        args = [sys.executable, "-m", "experiments.train", f"--model={model}", f"--workdir={workdir}",
                f"--compilation_cache_dir={cache_dir}", "--progress=false", *data]
        if FLAGS.quick:
            args.append(f"--max_epochs={FLAGS.epochs}")
        start = time.perf_counter()
        _run_checked(args, f"{case}/{model}")
        seconds = time.perf_counter() - start
        result = _run_result(workdir, json.load(open(os.path.join(workdir, "summary.json"))), seconds)
    return {**result, "process_seconds": seconds, "peak_rss_mib": float("nan"), "device_peak_mib": float("nan")}


def run_case(case: str, model: str) -> dict:
    """Run one case in a fresh interpreter; its JSON result with peak memory."""
    if case in CLI_CASES:
        return run_cli_case(case, model, os.path.join(os.path.abspath(FLAGS.out), "compilation_cache", model))
    args = [sys.executable, "-m", "benchmarks.epoch_time", f"--case={case}", f"--model={model}",
            f"--epochs={FLAGS.epochs}", f"--data_dir={FLAGS.data_dir}", f"--quick={FLAGS.quick}"]
    start = time.perf_counter()
    done = _run_checked(args, f"{case}/{model}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - start
    return result


def summarise(result: dict, examples: int, flops_per_example: float) -> dict:
    epochs = result["epoch_seconds"]
    steady = statistics.median(epochs[1:] if len(epochs) > 1 else epochs)
    return {**result, "steady_epoch_seconds": steady, "examples_per_second": examples / steady,
            "gflops": flops_per_example * examples / steady / 1e9}


def combine(runs: list[dict]) -> dict:
    """One case's rounds -> its figures: medians over rounds, every round kept."""
    steady = [r["steady_epoch_seconds"] for r in runs]
    middle = runs[steady.index(statistics.median_low(steady))]
    return {**middle, "steady_epoch_seconds": statistics.median(steady), "rounds_steady_epoch_seconds": steady,
            "time_to_result": statistics.median(r["time_to_result"] for r in runs),
            "process_seconds": statistics.median(r["process_seconds"] for r in runs),
            "examples_per_second": statistics.median(r["examples_per_second"] for r in runs),
            "gflops": statistics.median(r["gflops"] for r in runs)}


def main(argv: list[str]) -> None:
    if FLAGS.case:
        result = CASES[FLAGS.case](FLAGS.model)
        result["peak_rss_mib"] = _peak_rss_mib()
        result["device_peak_mib"] = _device_peak_mib()
        print(json.dumps(result))
        return
    if not FLAGS.quick and not FLAGS.data_dir:
        raise SystemExit("error: --data_dir: needed for real-data timing (or use --quick)")
    unknown = sorted(set(FLAGS.cases) - set(CASES) - set(CLI_CASES))
    if unknown:
        raise SystemExit(f"error: --cases: unknown case {unknown[0]!r}; known: {', '.join([*CASES, *CLI_CASES])}")
    from mlp_research.spec import ModelSpec

    flops_per_example = ModelSpec().train_flops_per_example()
    examples = QUICK_EXAMPLES if FLAGS.quick else 60_000
    repeats = 1 if FLAGS.quick else max(FLAGS.repeats, 1)
    os.makedirs(FLAGS.out, exist_ok=True)
    plan = [(case, model) for model in FLAGS.models for case in FLAGS.cases
            if not (case == "torch_plain" and model != FLAGS.models[0])]  # one torch reference is enough
    runs: dict[tuple[str, str], dict[int, dict]] = {key: {} for key in plan}  # case -> round -> result
    failures: dict[tuple[str, str], str] = {}
    for round_index in range(repeats):
        for case, model in plan:
            if (case, model) in failures:
                continue
            print(f"round {round_index + 1}/{repeats}: {case} / {model} ...", flush=True)
            try:
                r = summarise(run_case(case, model), examples, flops_per_example)
            except (RuntimeError, OSError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
                # e.g. a plugin this machine lacks, or a hung case: the other cases still count
                failures[(case, model)] = " ".join(str(e).split())[:300] or type(e).__name__
                print(f"  failed: {failures[(case, model)]}", flush=True)
                continue
            runs[(case, model)][round_index] = r
            print(f"  steady epoch {r['steady_epoch_seconds']:.3f} s, {r['gflops']:.0f} GFLOP/s, "
                  f"time to result {r['time_to_result']:.2f} s, val_acc {r['final_val_acc']:.4f}", flush=True)
        # Written after every round: a run cut short (a time limit on a lent GPU) keeps what it measured.
        table = write_report(plan, runs, failures, round_index + 1, examples)
    print(table)


def write_report(plan: list[tuple[str, str]], runs: dict, failures: dict, rounds: int, examples: int) -> str:
    """bench.json and bench.md from the rounds so far; returns the markdown."""
    results = []
    for case, model in plan:
        if (case, model) in failures or not runs[(case, model)]:
            continue
        mine, plain = runs[(case, model)], runs.get(("jax_plain", model), {})
        r = combine(list(mine.values()))
        # Paired per round: a busy spell of the machine slows both sides of a ratio alike.
        ratios = [mine[i]["steady_epoch_seconds"] / plain[i]["steady_epoch_seconds"] for i in mine if i in plain]
        r.update(case=case, model=model, vs_jax_plain=statistics.median(ratios) if ratios else None,
                 rounds_vs_jax_plain=ratios)
        results.append(r)
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "device": results[0]["device"] if results else ""}
    payload = {"machine": machine, "epochs": FLAGS.epochs, "rounds": rounds, "quick": FLAGS.quick,
               "results": results, "failed": [{"case": c, "model": m, "error": e} for (c, m), e in failures.items()]}
    with open(os.path.join(FLAGS.out, "bench.json"), "w") as f:
        json.dump(payload, f, indent=2)
    lines = [f"Device: {machine['device']} ({machine['cpu_count']} CPUs), {FLAGS.epochs} epochs of {examples:,} "
             f"examples (cli cases: the default 10), batch {BATCH}, median of {rounds} interleaved round(s)", "",
             "| case | model | steady epoch (s) | vs jax_plain | examples/s | GFLOP/s | compile (s) | "
             "time to result (s) | process (s) | peak RSS (MiB) | device peak (MiB) | val_acc |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ratio = f"{r['vs_jax_plain']:.2f}x" if r["vs_jax_plain"] is not None else "-"
        lines.append(f"| {r['case']} | {r['model']} | {r['steady_epoch_seconds']:.3f} | {ratio} | "
                     f"{r['examples_per_second']:,.0f} | {r['gflops']:.0f} | {r['compile_seconds']:.2f} | "
                     f"{r['time_to_result']:.2f} | {r['process_seconds']:.2f} | {r['peak_rss_mib']:.0f} | "
                     f"{r['device_peak_mib']:.0f} | {r['final_val_acc']:.4f} |")
    lines += [f"\nFailed: {c} / {m}: {e}" for (c, m), e in failures.items()]
    table = "\n".join(lines) + "\n"
    with open(os.path.join(FLAGS.out, "bench.md"), "w") as f:
        f.write(table)
    return table


if __name__ == "__main__":
    app.run(main)
