"""The benchmark harnesses run end to end at their --quick size (a smoke check, not a timing test)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def test_epoch_time_quick_writes_table(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.epoch_time", "--quick", "--epochs=2", "--cases=core,jax_plain,torch_plain",
         "--models=mlp_scratch", f"--out={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.load(open(tmp_path / "bench.json"))
    cases = {r["case"]: r for r in payload["results"]}
    assert set(cases) == {"core", "jax_plain", "torch_plain"}
    for r in cases.values():
        assert len(r["epoch_seconds"]) == 2 and r["steady_epoch_seconds"] > 0 and r["peak_rss_mib"] > 0
        assert r["final_val_acc"] > 0.3  # every case really trains
    table = (tmp_path / "bench.md").read_text()
    assert "| core | mlp_scratch |" in table and "vs jax_plain" in table
