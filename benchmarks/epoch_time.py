"""Epoch time of the core loop and the plugin backends against plain reference loops, on the same
machine in one invocation.

    python -m benchmarks.epoch_time --data_dir=../shared/data/fashion_mnist --out=runs/bench
    python -m benchmarks.epoch_time --data_dir=../shared/data/fashion_mnist --cases=backend_torch,torch_plain
    python -m benchmarks.epoch_time --quick            # synthetic data, 2 epochs: a smoke run

Each case runs in its own subprocess (clean memory numbers, no shared caches):
- `core`: `experiments.train`'s loop (`train_and_evaluate`) with default flags, epoch time as it
  reports it (training plus the per-epoch evaluation of the test split; periodic checkpoints no
  more often than every 10 s, so a short run saves at the end).
- `core_save_each_epoch`: the same with an Orbax checkpoint after every epoch.
- `jax_plain`, `jax_plain_tuned`, `torch_plain`, `tensorflow_plain`, `mxnet_plain`: plain loops of each
  framework on the same batches, with the same per-epoch evaluation (`benchmarks/plain_loops.py`
  says what each is and why it is the reference).
- `backend_torch`, `backend_tensorflow`, `backend_mxnet`: the `core` run trained by a plugin backend;
  each is compared with its own framework's plain loop when both are in --cases.
- `cli_cold` / `cli_warm`: the real command, `python -m experiments.train`, 10 epochs with default
  flags, timed from process start to exit: with an empty persistent compilation cache, then with
  the cache that run left (time to result).
- `core_bf16`, `backend_torch_bf16`, `backend_tensorflow_bf16`: the same runs with
  `--matmul_precision=bfloat16`, each compared with its float32 case ("vs float32").

Every round also measures the hardware floor of an epoch in each precision (`benchmarks/floor.py`:
the step's matmuls timed alone in their fastest form, plus the evaluation's), and every case is
printed as a multiple of the floor of its precision ("vs floor", paired per round), and of the looser
per-call floor, which times each matmul as its own jitted call the way issue 22 did ("vs per-call
floor"). The table's
first line names the CPU and its vector and matrix extensions (AVX-512, AMX).

Cases run in `--repeats` interleaved rounds (core, plain, core, plain, ...), so a slow spell of a
shared machine hits both sides of a comparison. Steady epoch = median over the epochs after the
first; a case's figure is the median over rounds, and "vs jax_plain" and "vs own plain loop"
(backend_X / X_plain) are medians of the per-round ratios. GFLOP/s counts
`ModelSpec.train_flops_per_example()`, the count `summary.json`'s `achieved_gflops` uses. Writes
`bench.json` and `bench.md` to --out.
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
from typing import Callable

from absl import app, flags

from benchmarks import floor as floor_lib
from benchmarks import plain_loops
from benchmarks.bench_table import BF16, PER_CALL, floor_summary, markdown, results_of
from mlp_research import hardware
from mlp_research.config import Config
from mlp_research.files import atomic_write

flags.DEFINE_string("data_dir", os.environ.get("MLP_RESEARCH_DATA_DIR", ""), "Fashion-MNIST IDX directory.")
flags.DEFINE_integer("epochs", 6, "Epochs per case (the first is warm-up).")
flags.DEFINE_list("cases", ["core", "core_save_each_epoch", "jax_plain", "torch_plain", "cli_cold", "cli_warm"],
                  "Cases to run.")
flags.DEFINE_integer("repeats", 3, "Interleaved rounds of every case (1 with --quick).")
flags.DEFINE_integer("case_timeout", 300, "Seconds before a hung case is stopped and reported as failed.")
flags.DEFINE_list("models", ["mlp_scratch", "mlp"], "Models to time.")
flags.DEFINE_boolean("quick", False, "Synthetic data, 2 epochs unless --epochs says otherwise, one round: "
                     "checks the harness, not the machine.")
flags.DEFINE_string("out", "runs/bench", "Output directory.")
flags.DEFINE_string("case", None, "Internal: run one case in this process and print its JSON.")
flags.DEFINE_string("model", "mlp_scratch", "Internal: the model of --case.")
flags.DEFINE_boolean("floor", True, "Measure the hardware floor of an epoch in every round.")
FLAGS = flags.FLAGS

QUICK_EXAMPLES = 6_000
FLOOR_CASE = "floor"  # internal: the hardware floor of each precision, measured once a round per model
FLOOR_PRECISIONS = ("float32", "bfloat16")


def _data_fields() -> dict:
    """The data of every case: real Fashion-MNIST, or synthetic data of its shape with --quick."""
    if FLAGS.quick:
        return {"dataset": "synthetic", "synthetic_train_size": QUICK_EXAMPLES, "synthetic_test_size": 1000}
    return {"data_dir": FLAGS.data_dir}


def _config(model: str) -> Config:
    # The default run as `experiments.train` does it.
    return Config().replace(model=model, max_epochs=FLAGS.epochs, progress=False, **_data_fields())


def _run_result(workdir: str, summary: dict, time_to_result: float) -> dict:
    """A case's figures from the run it left in `workdir` (the run's own GFLOP/s kept as a cross-check)."""
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return {"epoch_seconds": [r["seconds"] for r in rows], "compile_seconds": summary["compile_seconds"],
            "time_to_result": time_to_result, "final_val_acc": summary["final"]["val_acc"],
            "device": summary["device"]["kind"], "summary_gflops": summary["achieved_gflops"]}


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


def case_floor(model: str) -> dict:
    """The epoch's floor in each precision, for this model on this data (`benchmarks/floor.py`)."""
    config = _config(model)
    num_eval = 10_000 if not FLAGS.quick else 1000
    return {precision: floor_lib.epoch_floor(config.spec, config.num_train_examples(), config.batch_size,
                                             precision, num_eval, config.eval_batch_size)
            for precision in FLOOR_PRECISIONS}


def case_core(model: str, **overrides) -> dict:
    from mlp_research.run.driver import train_and_evaluate

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        summary = train_and_evaluate(_config(model).replace(**overrides), workdir)
        return _run_result(workdir, summary, time.perf_counter() - t0)


def case_core_save_each_epoch(model: str) -> dict:
    """The core loop with an Orbax checkpoint after every epoch (no minimum interval)."""
    return case_core(model, checkpoint_min_seconds=0)


def _backend_case(backend: str) -> Callable[..., dict]:
    def case(model: str, **overrides) -> dict:
        """The same driver and flags, trained by a plugin backend."""
        return case_core(model, backend=backend, **overrides)

    return case


def _plain_case(name: str) -> Callable[[str], dict]:
    def case(model: str) -> dict:
        """A plain loop of one framework (`benchmarks.plain_loops`), on the same data and batches."""
        return plain_loops.run(name, _config(model))

    return case


def _bfloat16_case(name: str, case: Callable[..., dict]) -> Callable[[str], dict]:
    def bf16(model: str) -> dict:
        """The base case with `--matmul_precision=bfloat16`."""
        return case(model, matmul_precision="bfloat16")

    return bf16


CASES = {"core": case_core, "core_save_each_epoch": case_core_save_each_epoch,
         **{name: _plain_case(name) for name in plain_loops.LOOPS},
         **{f"backend_{b}": _backend_case(b) for b in ("torch", "tensorflow", "mxnet")}}
CASES.update({f"{name}{BF16}": _bfloat16_case(name, CASES[name]) for name in
              ("core", "backend_torch", "backend_tensorflow")})
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


def summarise(result: dict, model: str) -> dict:
    """One round's steady epoch, examples/s and GFLOP/s, the FLOPs from the model's spec (one definition)."""
    config = _config(model)
    examples = config.num_train_examples()
    epochs = result["epoch_seconds"]
    steady = statistics.median(epochs[1:] if len(epochs) > 1 else epochs)
    return {**result, "steady_epoch_seconds": steady, "examples_per_second": examples / steady,
            "gflops": config.train_flops_per_example() * examples / steady / 1e9}


def _run_round(round_index: int, repeats: int, plan: list[tuple[str, str]], runs: dict, failures: dict,
               floors: dict) -> None:
    """One interleaved round of every case (and of the floor of each model, unless --floor=false)."""
    if FLAGS.floor:
        for model in FLAGS.models:
            try:
                measured = run_case(FLOOR_CASE, model)
                floors.setdefault(model, {})[round_index] = {p: measured[p] for p in FLOOR_PRECISIONS}
            except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as e:
                print(f"  floor of {model} failed: {e}", flush=True)
    for case, model in plan:
        if (case, model) in failures:
            continue
        print(f"round {round_index + 1}/{repeats}: {case} / {model} ...", flush=True)
        try:
            r = summarise(run_case(case, model), model)
        except (RuntimeError, OSError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
            # e.g. a plugin this machine lacks, or a hung case: the other cases still count
            failures[(case, model)] = " ".join(str(e).split())[:300] or type(e).__name__
            print(f"  failed: {failures[(case, model)]}", flush=True)
            continue
        runs[(case, model)][round_index] = r
        print(f"  steady epoch {r['steady_epoch_seconds']:.3f} s, {r['gflops']:.0f} GFLOP/s, "
              f"time to result {r['time_to_result']:.2f} s, val_acc {r['final_val_acc']:.4f}", flush=True)


def main(argv: list[str]) -> None:
    if FLAGS.case == FLOOR_CASE:
        print(json.dumps(case_floor(FLAGS.model)))
        return
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
    if FLAGS.quick and not FLAGS["epochs"].present:
        FLAGS.epochs = 2
    repeats = 1 if FLAGS.quick else max(FLAGS.repeats, 1)
    os.makedirs(FLAGS.out, exist_ok=True)
    print(f"hardware: {hardware.label()}", flush=True)
    plan = [(case, model) for model in FLAGS.models for case in FLAGS.cases]
    runs: dict[tuple[str, str], dict[int, dict]] = {key: {} for key in plan}  # case -> round -> result
    failures: dict[tuple[str, str], str] = {}
    floors: dict[str, dict[int, dict]] = {}  # model -> round -> precision -> floor
    for round_index in range(repeats):
        _run_round(round_index, repeats, plan, runs, failures, floors)
        # Written after every round: a run cut short (a time limit on a lent GPU) keeps what it measured.
        table = write_report(plan, runs, failures, floors, round_index + 1)
    print(table)


def write_report(plan: list[tuple[str, str]], runs: dict, failures: dict, floors: dict, rounds: int) -> str:
    """bench.json and bench.md from the rounds so far; returns the markdown."""
    results = results_of(plan, runs, failures, floors)
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "device": results[0]["device"] if results else "",
               "hardware": hardware.describe()}
    payload = {"machine": machine, "epochs": FLAGS.epochs, "rounds": rounds, "quick": FLAGS.quick,
               "floor": floor_summary(floors), "per_call_floor": floor_summary(floors, PER_CALL),
               "floor_rounds": floors, "results": results,
               "failed": [{"case": c, "model": m, "error": e} for (c, m), e in failures.items()]}
    atomic_write(os.path.join(FLAGS.out, "bench.json"), json.dumps(payload, indent=2))
    config = _config(FLAGS.models[0])
    bf16 = "has" if machine["hardware"]["fast_bfloat16"] else "has no"
    header = [f"Device: {machine['device']}; CPU: {hardware.label()} ({bf16} a bfloat16 matrix unit)",
              f"{FLAGS.epochs} epochs of {config.num_train_examples():,} examples (cli cases: the default 10), batch "
              f"{config.batch_size}, median of {rounds} interleaved round(s); vs own plain loop: backend_X / X_plain; "
              f"vs float32: X{BF16} / X; vs floor: the epoch over its precision's floor (benchmarks/floor.py); vs "
              "per-call floor: over the floor with each matmul its own jitted call (issue 22's method)"]
    table = markdown(results, floor_summary(floors), header, failures, floor_summary(floors, PER_CALL))
    atomic_write(os.path.join(FLAGS.out, "bench.md"), table)
    return table


if __name__ == "__main__":
    app.run(main)
