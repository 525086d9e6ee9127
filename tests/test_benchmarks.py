"""The benchmark harnesses run end to end at their --quick size (a smoke check, not a timing test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO


def test_epoch_time_quick_writes_table(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.epoch_time", "--quick", "--epochs=2", "--models=mlp_scratch",
         "--cases=core,jax_plain,torch_plain,backend_torch,cli_cold,cli_warm", f"--out={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.load(open(tmp_path / "bench.json"))
    cases = {r["case"]: r for r in payload["results"]}
    assert set(cases) == {"core", "jax_plain", "torch_plain", "backend_torch", "cli_cold", "cli_warm"}
    for r in cases.values():
        assert len(r["epoch_seconds"]) == 2 and r["steady_epoch_seconds"] > 0 and r["time_to_result"] > 0
        assert r["final_val_acc"] > 0.3  # every case really trains
    assert cases["core"]["peak_rss_mib"] > 0 and cases["jax_plain"]["vs_jax_plain"] == 1.0
    assert os.listdir(tmp_path / "compilation_cache" / "mlp_scratch")  # the cold run filled it for the warm one
    table = (tmp_path / "bench.md").read_text()
    assert "| core | mlp_scratch |" in table and "| cli_warm | mlp_scratch |" in table and "vs jax_plain" in table


def test_a_case_figures_are_medians_over_rounds():
    from benchmarks import epoch_time

    def run(steady):
        return {"steady_epoch_seconds": steady, "time_to_result": 10 * steady, "process_seconds": 11 * steady,
                "examples_per_second": 1 / steady, "gflops": 2 / steady, "epoch_seconds": [steady]}

    combined = epoch_time.combine([run(0.3), run(0.9), run(0.4)])
    assert combined["steady_epoch_seconds"] == 0.4 and combined["rounds_steady_epoch_seconds"] == [0.3, 0.9, 0.4]
    assert combined["time_to_result"] == 4.0 and combined["epoch_seconds"] == [0.4]


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
