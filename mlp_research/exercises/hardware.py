"""Hardware probes: matmul throughput at aligned and misaligned sizes, and streaming memory bandwidth.

Each probe measures one case per call (a size, a kernel), so the questions can
interleave cases over rounds (`timing.interleaved`). Inputs and compiled
programs are built once per case, outside the timed calls. FLOPs are counted
as everywhere in the project: a multiply-add is 2. Results are stored under a
device label, so a later run on another machine adds columns instead of
overwriting this one's.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mlp_research.files import atomic_write, read_json_object
from mlp_research.hardware import label

FLOPS_PER_MULTIPLY_ADD = 2


def device_label(device: jax.Device | None = None) -> str:
    """A stable, human-readable name for the device measured: 'cpu: Intel Xeon ..., 2 cores, AVX-512 ...'."""
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


def matmul_flops(n: int) -> int:
    """An n x n by n x n matmul: n^3 multiply-adds."""
    return FLOPS_PER_MULTIPLY_ADD * n**3


@functools.lru_cache(maxsize=1)
def _operands(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The inputs of size n (one size kept at a time: rounds walk the sizes in order)."""
    rng = np.random.default_rng(n)
    return rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)


@functools.lru_cache(maxsize=None)
def _compiled(n: int) -> Callable:
    """The compiled JAX matmul of size n (compiled once: rounds time the multiplication, not XLA)."""
    spec = jax.ShapeDtypeStruct((n, n), jnp.float32)
    return jax.jit(jnp.matmul).lower(spec, spec).compile()


def _jax_matmul(a: np.ndarray, b: np.ndarray) -> Callable[[], object]:
    ja, jb, f = jnp.asarray(a), jnp.asarray(b), _compiled(len(a))
    return lambda: f(ja, jb).block_until_ready()


def _numpy_matmul(a: np.ndarray, b: np.ndarray) -> Callable[[], object]:
    return lambda: a @ b


MATMULS = {"jax": _jax_matmul, "numpy": _numpy_matmul}  # jit on the default device; the host's BLAS


def matmul_gflops(impl: str, n: int, reps: int) -> float:
    """GFLOP/s of one float32 square matmul of size n with an implementation of `MATMULS`, the median of `reps`
    calls after one warm-up."""
    return matmul_flops(n) / median_seconds(MATMULS[impl](*_operands(n)), reps) / 1e9


class Bandwidth:
    """Streaming kernels over arrays far larger than the caches, as STREAM counts them (no write-allocate).

    copy: x -> y (read 1, write 1); triad: a = b + s*c (read 2, write 1, one multiply-add per element). numpy's
    copy runs in 1 thread or in `threads` threads over disjoint slices (it releases the GIL), which shows whether
    one core saturates the memory; JAX runs in XLA's own threads, outputs reusing their input's buffer (a fresh 100+
    MB output each call would time the kernel's page faulting instead of the memory bus).
    """

    KERNELS = {"copy": (2, 0), "triad": (3, FLOPS_PER_MULTIPLY_ADD)}  # (array touches, FLOPs) per element

    def __init__(self, num_floats: int, reps: int) -> None:
        self.n, self.reps = num_floats, reps
        self.host = {k: np.full(num_floats, v, np.float32) for k, v in (("x", 1.0), ("y", 0.0))}
        self._pools: dict[int, concurrent.futures.ThreadPoolExecutor] = {}
        self.device = {"x": jnp.arange(num_floats, dtype=jnp.float32), "c": jnp.full(num_floats, 0.5, jnp.float32)}
        self._copy = jax.jit(lambda v: v * jnp.float32(1.0001), donate_argnums=0)
        self._triad = jax.jit(lambda a, c: a + jnp.float32(3.0) * c, donate_argnums=0)

    def bytes(self, kernel: str) -> int:
        return self.KERNELS[kernel][0] * 4 * self.n

    def gb_per_s(self, impl: str, kernel: str, threads: int = 1) -> float:
        """One case: 'jax' or 'numpy' (in `threads` threads), 'copy' or 'triad'."""
        fn = {"jax": lambda: self._jax(kernel), "numpy": lambda: self._numpy(kernel, threads)}[impl]()
        return self.bytes(kernel) / median_seconds(fn, self.reps, warmup=1) / 1e9

    def _jax(self, kernel: str) -> Callable[[], None]:
        def run() -> None:
            x = self.device["x"]
            self.device["x"] = self._copy(x) if kernel == "copy" else self._triad(x, self.device["c"])
            self.device["x"].block_until_ready()
        return run

    def _numpy(self, kernel: str, threads: int) -> Callable[[], None]:
        if kernel != "copy":  # numpy's triad takes two passes (5 array touches), not the kernel counted here
            raise ValueError(f"numpy measures copy only, not {kernel!r}")
        x, y = self.host["x"], self.host["y"]
        bounds = np.linspace(0, self.n, threads + 1, dtype=np.int64)
        parts = [slice(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
        if threads == 1:
            return lambda: np.copyto(y, x)
        if threads not in self._pools:
            self._pools[threads] = concurrent.futures.ThreadPoolExecutor(threads)
        pool = self._pools[threads]
        return lambda: list(pool.map(lambda s: np.copyto(y[s], x[s]), parts))

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown()


def measured(path: str, device: str, settings: dict, measure: Callable[[], dict], log: Callable[[str], None],
             what: str) -> dict:
    """Every device's stored results, this device's measured now (`measure()`) unless stored with `settings`."""
    stored = load(path)
    if device in stored and all(stored[device].get(k) == v for k, v in settings.items()):
        log(f"{what} on {device}: measured earlier, reusing")
        return stored
    return store(path, device, {**settings, **measure()})


def store(path: str, device: str, payload: dict) -> dict:
    """Merge `payload` under `device` into the JSON file at `path`; returns every device's results."""
    data = load(path)
    data[device] = payload
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write(path, json.dumps(data, indent=1) + "\n")
    return data


def load(path: str) -> dict:
    """Every device's stored results; an unreadable file is ignored with a warning (measured again)."""
    return read_json_object(path, "unreadable ({reason}); measuring again") or {}
