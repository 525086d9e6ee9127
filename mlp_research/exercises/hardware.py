"""Hardware probes: matmul throughput at aligned and misaligned sizes, and streaming memory bandwidth.

Each measurement runs on JAX's default device (and with numpy on the host CPU)
and is stored under a device label, so a later run on another machine adds a
column instead of overwriting this one.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mlp_research.files import atomic_write, read_json_object
from mlp_research.hardware import label

# Memory transfer rates (million transfers per second) used to turn a measured
# bandwidth into an implied bus width. They are assumptions, stated in the report.
TRANSFER_RATES_MT = {
    "cpu": {"DDR4-2666": 2666, "DDR4-3200": 3200, "DDR5-4800": 4800},
    "gpu": {"HBM2e 3.2 Gb/s/pin": 3200, "HBM3 5.2 Gb/s/pin": 5200, "GDDR6 16 Gb/s/pin": 16000},
}


def device_label(device: jax.Device | None = None) -> str:
    """A stable, human-readable name for the device measured: 'cpu: AMD EPYC (2 cores)', 'gpu: NVIDIA H100'."""
    device = device or jax.devices()[0]
    if device.platform == "cpu":
        return f"cpu: {label()}"
    return f"{device.platform}: {device.device_kind}"


def host_label() -> str:
    return f"cpu: {label()}"


def median_seconds(fn: Callable[[], object], reps: int, warmup: int = 1) -> float:
    """Median wall time of `fn()` (which must block until its result is ready)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def matmul_seconds_jax(n: int, reps: int, dtype=jnp.float32) -> float:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
    f = jax.jit(jnp.matmul).lower(a, b).compile()
    return median_seconds(lambda: f(a, b).block_until_ready(), reps)


def matmul_seconds_numpy(n: int, reps: int) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    return median_seconds(lambda: a @ b, reps)


def matmul_table(sizes: Sequence[int], reps: int, numpy_too: bool = True) -> list[dict]:
    """Rows of (size, implementation, seconds, GFLOP/s) for square float32 matmuls."""
    rows = []
    for n in sizes:
        flops = 2.0 * n**3
        s = matmul_seconds_jax(n, reps)
        rows.append({"size": n, "impl": "jax", "seconds": s, "gflops": flops / s / 1e9})
        if numpy_too:
            s = matmul_seconds_numpy(n, reps)
            rows.append({"size": n, "impl": "numpy", "seconds": s, "gflops": flops / s / 1e9})
    return rows


def bandwidth_table(num_floats: int, reps: int) -> list[dict]:
    """Streaming scale-copy (x = 1.0001 x: read 1, write 1) and triad (a = a + s c: read 2, write 1), GB/s.

    Arrays are far larger than any cache, so the time is the memory's, not the cores'.
    Outputs reuse their input's buffer (donation): a fresh 100+ MB output each call
    would measure the kernel's page faulting instead of the memory bus.
    """
    rows = []
    nbytes = 4 * num_floats
    state = {"x": jnp.arange(num_floats, dtype=jnp.float32), "a": jnp.ones(num_floats, jnp.float32)}
    c = jnp.full(num_floats, 0.5, jnp.float32)
    copy = jax.jit(lambda v: v * jnp.float32(1.0001), donate_argnums=0)
    triad = jax.jit(lambda a, c: a + jnp.float32(3.0) * c, donate_argnums=0)

    def run_copy() -> None:
        state["x"] = copy(state["x"])
        state["x"].block_until_ready()

    def run_triad() -> None:
        state["a"] = triad(state["a"], c)
        state["a"].block_until_ready()

    s = median_seconds(run_copy, reps, warmup=2)
    rows.append({"impl": "jax", "kernel": "copy", "bytes": 2 * nbytes, "seconds": s, "gb_per_s": 2 * nbytes / s / 1e9})
    s = median_seconds(run_triad, reps, warmup=2)
    rows.append({"impl": "jax", "kernel": "triad", "bytes": 3 * nbytes, "seconds": s, "gb_per_s": 3 * nbytes / s / 1e9})
    xh = np.arange(num_floats, dtype=np.float32)
    yh = xh * 0.5
    out = np.empty_like(xh)
    s = median_seconds(lambda: np.copyto(out, xh), reps)
    rows.append({"impl": "numpy", "kernel": "copy", "bytes": 2 * nbytes, "seconds": s,
                 "gb_per_s": 2 * nbytes / s / 1e9})

    def np_triad() -> None:
        np.multiply(yh, np.float32(3.0), out=out)
        np.add(xh, out, out=out)  # two passes: 5 array touches, counted as such

    s = median_seconds(np_triad, reps)
    rows.append({"impl": "numpy", "kernel": "triad (2 passes)", "bytes": 5 * nbytes, "seconds": s,
                 "gb_per_s": 5 * nbytes / s / 1e9})
    return rows


def implied_bus_widths(gb_per_s: float, platform_name: str) -> list[dict]:
    """Bus width in bits that a bandwidth needs at common transfer rates (bandwidth = width x rate)."""
    rates = TRANSFER_RATES_MT["gpu" if platform_name == "gpu" else "cpu"]
    out = []
    for name, mt in rates.items():
        bits = gb_per_s * 1e9 * 8 / (mt * 1e6)
        out.append({"memory": name, "mt_per_s": mt, "bits": bits, "channels_64bit": bits / 64})
    return out


def store(path: str, label: str, payload: dict) -> dict:
    """Merge `payload` under `label` into the JSON file at `path`; returns every label's results."""
    data = load(path)
    data[label] = payload
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write(path, json.dumps(data, indent=1) + "\n")
    return data


def load(path: str) -> dict:
    """Every label's stored results; an unreadable file is ignored with a warning (measured again)."""
    return read_json_object(path, "unreadable ({reason}); measuring again") or {}
