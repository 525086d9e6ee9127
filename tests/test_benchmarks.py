"""The benchmark harnesses run end to end at their --quick size (a smoke check, not a timing test)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO


def _needs(*modules: str) -> None:
    """Skip unless these are installed (found, not imported: TensorFlow alone takes ~4 s to import)."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


def _epoch_time(out, cases: str, models: str = "mlp_scratch") -> dict[str, dict]:
    """Run the harness at --quick size; its results by case (the command must succeed)."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.epoch_time", "--quick", "--epochs=2", f"--models={models}",
                           f"--cases={cases}", f"--out={out}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.load(open(out / "bench.json"))
    assert payload["failed"] == [], payload["failed"]
    results = {r["case"]: r for r in payload["results"]}
    assert set(results) == set(cases.split(","))
    for r in results.values():
        assert len(r["epoch_seconds"]) == 2 and r["steady_epoch_seconds"] > 0 and r["time_to_result"] > 0
        assert r["final_val_acc"] > 0.3  # every case really trains
    return results


def test_epoch_time_quick_writes_table(tmp_path):
    cases = _epoch_time(tmp_path, "core,jax_plain,cli_cold,cli_warm")
    assert cases["core"]["peak_rss_mib"] > 0 and cases["jax_plain"]["vs_jax_plain"] == 1.0
    for name in ("core", "cli_cold", "cli_warm"):  # the run's own figure: the same FLOP count, the same epochs
        assert cases[name]["gflops"] == pytest.approx(cases[name]["summary_gflops"], rel=1e-9)
    assert os.listdir(tmp_path / "compilation_cache" / "mlp_scratch")  # the cold run filled it for the warm one
    table = (tmp_path / "bench.md").read_text()
    assert "| core | mlp_scratch |" in table and "| cli_warm | mlp_scratch |" in table and "vs jax_plain" in table


def test_each_backend_is_compared_with_its_own_frameworks_plain_loop(tmp_path):
    _needs("mlp_research_torch", "mlp_research_tensorflow", "mlp_research_mxnet")
    pairs = {"backend_torch": "torch_plain", "backend_tensorflow": "tensorflow_plain", "backend_mxnet": "mxnet_plain"}
    cases = _epoch_time(tmp_path, ",".join(f"{plain},{backend}" for backend, plain in pairs.items()))
    table = (tmp_path / "bench.md").read_text()
    assert "| vs own plain loop |" in table
    for backend, plain in pairs.items():
        mine, own = cases[backend], cases[plain]
        assert mine["own_plain"] == plain and own["vs_own_plain"] is None
        assert mine["vs_own_plain"] == pytest.approx(mine["steady_epoch_seconds"] / own["steady_epoch_seconds"])
        row = f"| {backend} | mlp_scratch | {mine['steady_epoch_seconds']:.3f} | {mine['vs_floor']:.2f}x | " \
              f"{mine['vs_per_call_floor']:.2f}x | - | - | {mine['vs_own_plain']:.2f}x |"
        assert row in table, row
        # Same init, batches and SGD: the plain loop reaches the backend's accuracy (1,000 test examples).
        assert abs(own["final_val_acc"] - mine["final_val_acc"]) <= 0.01, (plain, own["final_val_acc"],
                                                                            mine["final_val_acc"])


def test_plain_loops_train_the_concise_model(tmp_path):
    """The `mlp` branches: nn.Linear's and Keras's default inits, and mxnet's hybridized gluon layers."""
    _needs("torch", "tensorflow", "mlp_research_mxnet")
    cases = _epoch_time(tmp_path, "torch_plain,tensorflow_plain,mxnet_plain", models="mlp")
    assert {r["model"] for r in cases.values()} == {"mlp"}


def test_own_plain_ratio_is_paired_per_round():
    from benchmarks import bench_table

    def run(steady):
        return {"steady_epoch_seconds": steady, "time_to_result": 1.0, "process_seconds": 1.0,
                "examples_per_second": 1 / steady, "gflops": 1 / steady, "epoch_seconds": [steady]}

    plan = [("mxnet_plain", "mlp"), ("backend_mxnet", "mlp")]
    runs = {plan[0]: {0: run(2.0), 2: run(1.0)}, plan[1]: {0: run(1.0), 1: run(9.0), 2: run(1.5)}}
    backend = bench_table.results_of(plan, runs, failures={}, floors={})[1]
    assert backend["rounds_vs_own_plain"] == [0.5, 1.5]  # round 1 has no plain loop to pair with
    assert backend["vs_own_plain"] == 1.0 and backend["vs_jax_plain"] is None


def test_a_case_figures_are_medians_over_rounds():
    from benchmarks import bench_table

    def run(steady):
        return {"steady_epoch_seconds": steady, "time_to_result": 10 * steady, "process_seconds": 11 * steady,
                "examples_per_second": 1 / steady, "gflops": 2 / steady, "epoch_seconds": [steady]}

    combined = bench_table.combine([run(0.3), run(0.9), run(0.4)])
    assert combined["steady_epoch_seconds"] == 0.4 and combined["rounds_steady_epoch_seconds"] == [0.3, 0.9, 0.4]
    assert combined["time_to_result"] == 4.0 and combined["epoch_seconds"] == [0.4]


def test_bfloat16_cases_are_paired_with_float32_and_every_case_with_its_precisions_floor():
    from benchmarks import bench_table
    from benchmarks.bench_table import PER_CALL

    def run(steady):
        return {"steady_epoch_seconds": steady, "time_to_result": 1.0, "process_seconds": 1.0,
                "examples_per_second": 1 / steady, "gflops": 1 / steady, "epoch_seconds": [steady],
                "compile_seconds": 0.0, "peak_rss_mib": 1.0, "device_peak_mib": 1.0, "final_val_acc": 0.5}

    plan = [("core", "mlp"), ("core_bf16", "mlp")]
    runs = {plan[0]: {0: run(0.4), 1: run(0.6)}, plan[1]: {0: run(0.1), 1: run(0.3)}}
    floors = {"mlp": {0: {"float32": {"epoch_seconds": 0.2, PER_CALL: 0.4},
                          "bfloat16": {"epoch_seconds": 0.05, PER_CALL: 0.1}},
                      1: {"float32": {"epoch_seconds": 0.3, PER_CALL: 0.6},
                          "bfloat16": {"epoch_seconds": 0.1, PER_CALL: 0.2}}}}
    core, bf16 = bench_table.results_of(plan, runs, failures={}, floors=floors)
    assert (core["precision"], bf16["precision"]) == ("float32", "bfloat16")
    assert core["rounds_vs_floor"] == [2.0, 2.0] and bf16["rounds_vs_floor"] == pytest.approx([2.0, 3.0])
    assert bf16["rounds_vs_per_call_floor"] == pytest.approx([1.0, 1.5])
    assert bf16["rounds_vs_float32"] == [0.25, 0.5] and core["vs_float32"] is None
    assert bench_table.floor_summary(floors) == {"mlp": pytest.approx({"float32": 0.25, "bfloat16": 0.075})}
    per_call = bench_table.floor_summary(floors, PER_CALL)
    table = bench_table.markdown([core, bf16], bench_table.floor_summary(floors), ["header"], {}, per_call)
    assert "| core_bf16 | mlp | 0.200 | 2.50x | 1.25x | 0.38x | - | - |" in table
    assert "Floor of an epoch, mlp: float32 0.250 s (per call 0.500 s), bfloat16 0.075 s (per call 0.150 s)" in table


def test_floor_times_each_matmul_of_a_step_and_the_evaluation():
    from benchmarks import floor
    from mlp_research.spec import ModelSpec

    spec = ModelSpec(num_hiddens=(32,))
    result = floor.epoch_floor(spec, num_train=1000, batch_size=100, precision="bfloat16", num_eval=300,
                               eval_batch_size=200, rounds=1)
    assert [m["name"] for m in result["matmuls"]] == ["forward 1", "weight gradient 1", "forward 2",
                                                      "weight gradient 2", "input gradient 2"]
    assert result["steps"] == 10 and result["eval_seconds"] > 0
    assert result["epoch_seconds"] == pytest.approx(10 * result["step_seconds"] + result["eval_seconds"])
    assert all(m["seconds"] > 0 and m["gflops"] > 0 for m in result["matmuls"])
    # Each matmul as its own jitted call pays a dispatch the compiled loop does not.
    assert all(m["per_call_seconds"] > m["seconds"] for m in result["matmuls"])
    assert result["per_call_epoch_seconds"] > result["epoch_seconds"]


def test_quick_bench_prints_the_hardware_and_bfloat16_against_float32(tmp_path):
    cases = _epoch_time(tmp_path, "core,core_bf16")
    assert cases["core_bf16"]["vs_float32"] is not None and cases["core"]["vs_floor"] > 0
    payload = json.load(open(tmp_path / "bench.json"))
    assert set(payload["floor"]["mlp_scratch"]) == {"float32", "bfloat16"}
    assert "extensions" in payload["machine"]["hardware"]
    assert "CPU: " in (tmp_path / "bench.md").read_text().splitlines()[0]


def test_unknown_case_is_refused(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.epoch_time", "--quick", "--cases=core,fast",
                           f"--out={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "--cases: unknown case 'fast'" in done.stderr


def test_scaling_quick_writes_table_with_flop_rates(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.scaling", "--quick", "--examples=2560", "--epochs=2",
                           f"--out={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.load(open(tmp_path / "scaling.json"))
    assert [p["num_hiddens"] for p in payload["width"]] == [[256], [1024]]
    assert [p["num_hiddens"] for p in payload["depth"]] == [[256], [256, 256]]
    for point in payload["width"] + payload["depth"]:
        assert point["gflops"] > 0 and point["epoch_seconds_60k"] > 0
        # summary.json's achieved_gflops counts the FLOPs the table's "GFLOP per epoch" does
        assert point["gflops"] == pytest.approx(point["gflop_per_epoch_60k"] / point["epoch_seconds_60k"])
    assert payload["width"][1]["params"] > payload["width"][0]["params"]
    assert "| 256x256 |" in (tmp_path / "scaling.md").read_text()


def test_device_check_script_runs_end_to_end_at_smoke_size(tmp_path, data_dir):
    """The GPU script, run here on the CPU at QUICK size: a GPU session must not find it broken."""
    env = {**os.environ, "QUICK": "1", "SKIP_INSTALL": "1", "PYTHON": sys.executable, "OUT": str(tmp_path),
           "DATA": data_dir}
    done = subprocess.run(["bash", "benchmarks/device_check.sh"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (tmp_path / "log.txt").read_text()
    assert log.count("rc=0") == 6 and "rc=1" not in log and log.rstrip().endswith("done"), log
    precision = [json.loads(line) for line in (tmp_path / "precision.jsonl").read_text().splitlines()]
    assert [p["precision"] for p in precision] == ["default", "float32", "tensorfloat32", "bfloat16"]
    assert (tmp_path / "bench" / "bench.md").exists() and (tmp_path / "scaling" / "scaling.md").exists()
    assert "jax" in (tmp_path / "versions.txt").read_text()


def test_precision_parity_pairs_seeds_and_reads_the_reports_best_command(tmp_path):
    from benchmarks import precision_parity

    report = tmp_path / "report.json"
    report.write_text(json.dumps({"q5": {"best": {"command": "python -m experiments.train --model=mlp "
                                                  "--num_hiddens=512,512 --lr=0.07 --seed=0 --data_dir=x "
                                                  "--workdir=runs/q5_best --matmul_precision=default"}}}))
    assert precision_parity.preset_settings("report_best", str(report)) == {"model": "mlp", "num_hiddens": "512,512",
                                                                            "lr": "0.07"}
    assert precision_parity.preset_settings("chapter", str(report)) == {}
    done = subprocess.run([sys.executable, "-m", "benchmarks.precision_parity", "--quick", "--seeds=2",
                           "--models=mlp_scratch", f"--out={tmp_path / 'out'}"], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json.load(open(tmp_path / "out" / "parity_chapter.json"))["rows"]
    assert len(row["float32"]["test_acc"]) == len(row["bfloat16"]["test_acc"]) == 2
    assert row["difference"]["mean"] == pytest.approx(np.mean(np.subtract(row["bfloat16"]["test_acc"],
                                                                          row["float32"]["test_acc"])))
    assert "| jax | mlp_scratch |" in (tmp_path / "out" / "parity_chapter.md").read_text()
