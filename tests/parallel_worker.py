"""Run one config under several --parallel modes in this process; print a JSON comparison.

Run by tests/test_parallel.py in a subprocess, because the number of (forced)
CPU devices is fixed when JAX starts: XLA_FLAGS=--xla_force_host_platform_device_count=N.
"""

from __future__ import annotations

import json
import sys
import tempfile

import jax
import numpy as np

from mlp_research.config import Config
from mlp_research.run.driver import train_and_evaluate


def main() -> None:
    overrides = json.loads(sys.argv[1])
    modes = sys.argv[2].split(",")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            config = Config().replace(progress=False, parallel=mode, **overrides)
            results[mode] = train_and_evaluate(config, f"{tmp}/{mode}")
    base = results[modes[0]]
    out = {"num_devices": jax.device_count()}
    for mode in modes:
        r = results[mode]
        out[mode] = {
            **r["final"],
            "num_devices": r["num_devices"],
            "parallel": r["parallel"],
            "max_param_diff": max(float(np.abs(r["params"][k] - base["params"][k]).max()) for k in base["params"]),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
