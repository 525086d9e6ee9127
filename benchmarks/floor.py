"""The hardware floor of a training epoch: what its matmuls alone cost on this machine.

A training step of an MLP is its matmuls (`ModelSpec.step_matmuls`: per layer
the forward pass, the weight gradient and, past the first layer, the input
gradient) plus elementwise work that is small beside them. Each matmul is timed
here alone, in the plain row-major form `a @ b` (the form the CPU's libraries
run fastest), inside one compiled loop so that no dispatch is counted, with the
operands of the precision asked: float32, or bfloat16 with float32 products
(what `--matmul_precision=bfloat16` computes). The epoch's floor is the number
of steps times the sum of one step's matmul times, plus the forward matmuls of
the per-epoch evaluation (the epochs the driver reports include it). An epoch
that takes 1.1x its floor spends 10% outside the matmuls (data, activations,
loss, optimiser, dispatch); one that takes 3x computes its matmuls on a slow
path.

The per-call floor is the same sum with each matmul timed the way issue 22
measured its floor: `jnp.dot` as its own jitted call, best of 5 rounds, so each
product also pays one dispatch (tens of microseconds on a CPU). It is the looser
of the two; both are printed, and the in-loop floor is the hardware's.

    python -m benchmarks.floor --num_hiddens=256 --precisions=float32,bfloat16
"""

from __future__ import annotations

import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from mlp_research.spec import ModelSpec

# What each --matmul_precision multiplies on a CPU (default and float32 both compute float32 there).
OPERAND_TYPES = {"default": jnp.float32, "float32": jnp.float32, "tensorfloat32": jnp.float32,
                 "bfloat16": jnp.bfloat16}
_TARGET_SECONDS = 0.02  # per timed call: long enough that the clock and the call are noise


def _loop(dtype, iterations: int):
    """`iterations` products a @ b in one compiled loop; the barrier stops XLA hoisting the invariant product."""

    def body(_, carry):
        a, b, total = carry
        out = jnp.dot(a, b, preferred_element_type=jnp.float32)
        a, out = jax.lax.optimization_barrier((a, out))
        return a, b, total + out[0, 0]

    return jax.jit(lambda a, b: jax.lax.fori_loop(0, iterations, body, (a, b, jnp.float32(0)))[2])


def _operands(m: int, k: int, n: int, dtype) -> tuple[jax.Array, jax.Array]:
    """Random `m x k` and `k x n` operands of `dtype`, the same in every call."""
    rng = np.random.default_rng(0)
    return (jnp.asarray(rng.standard_normal((m, k), np.float32), dtype),
            jnp.asarray(rng.standard_normal((k, n), np.float32), dtype))


def matmul_seconds(m: int, k: int, n: int, precision: str = "float32", rounds: int = 5) -> float:
    """Seconds of one `m x k @ k x n` product at `precision`'s operand type: the median over `rounds`."""
    dtype = OPERAND_TYPES[precision]
    a, b = _operands(m, k, n, dtype)
    probe = _loop(dtype, 8)
    probe(a, b).block_until_ready()
    t0 = time.perf_counter()
    probe(a, b).block_until_ready()
    iterations = max(8, min(20_000, int(_TARGET_SECONDS / max((time.perf_counter() - t0) / 8, 1e-7))))
    timed = _loop(dtype, iterations)
    timed(a, b).block_until_ready()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        timed(a, b).block_until_ready()
        times.append((time.perf_counter() - t0) / iterations)
    return statistics.median(times)


def matmul_seconds_per_call(m: int, k: int, n: int, precision: str = "float32", rounds: int = 5) -> float:
    """Seconds of one `m x k @ k x n` product as its own jitted `jnp.dot` call, dispatch included: the best of
    `rounds` rounds, each the mean over enough blocking calls to fill `_TARGET_SECONDS`."""
    a, b = _operands(m, k, n, OPERAND_TYPES[precision])
    dot = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    dot(a, b).block_until_ready()
    t0 = time.perf_counter()
    dot(a, b).block_until_ready()
    calls = max(3, min(2_000, int(_TARGET_SECONDS / max(time.perf_counter() - t0, 1e-6))))
    best = math.inf
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            dot(a, b).block_until_ready()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def step_floor(spec: ModelSpec, batch_size: int, precision: str = "float32", rounds: int = 5) -> dict:
    """Each matmul of one training step with its time and rate (in-loop and per call), and their sums."""
    matmuls = []
    for name, m, k, n in spec.step_matmuls(batch_size):
        seconds = matmul_seconds(m, k, n, precision, rounds)
        matmuls.append({"name": name, "m": m, "k": k, "n": n, "seconds": seconds,
                        "gflops": 2 * m * k * n / seconds / 1e9,
                        "per_call_seconds": matmul_seconds_per_call(m, k, n, precision, rounds)})
    return {"precision": precision, "matmuls": matmuls, "step_seconds": sum(x["seconds"] for x in matmuls),
            "per_call_step_seconds": sum(x["per_call_seconds"] for x in matmuls)}


def epoch_floor(spec: ModelSpec, num_train: int, batch_size: int, precision: str = "float32", num_eval: int = 0,
                eval_batch_size: int = 2048, rounds: int = 5) -> dict:
    """`step_floor` times the training steps (a short last batch counts as a full one: it computes as one),
    plus the forward matmuls of evaluating `num_eval` examples in batches of `eval_batch_size`."""
    step = step_floor(spec, batch_size, precision, rounds)
    steps = math.ceil(num_train / batch_size)
    eval_seconds = per_call_eval_seconds = 0.0
    if num_eval:
        eval_batch = min(eval_batch_size, num_eval)
        forward = [(m, k, n) for name, m, k, n in spec.step_matmuls(eval_batch) if name.startswith("forward")]
        batches = math.ceil(num_eval / eval_batch)
        eval_seconds = batches * sum(matmul_seconds(*mkn, precision, rounds) for mkn in forward)
        per_call_eval_seconds = batches * sum(matmul_seconds_per_call(*mkn, precision, rounds) for mkn in forward)
    train_seconds = steps * step["step_seconds"]
    return {**step, "steps": steps, "train_seconds": train_seconds, "eval_seconds": eval_seconds,
            "epoch_seconds": train_seconds + eval_seconds,
            "per_call_epoch_seconds": steps * step["per_call_step_seconds"] + per_call_eval_seconds}


flags.DEFINE_list("num_hiddens", ["256"], "Hidden widths of the model.")
flags.DEFINE_integer("batch_size", 256, "Batch size.")
flags.DEFINE_integer("num_train", 60_000, "Training examples per epoch.")
flags.DEFINE_integer("num_eval", 10_000, "Examples evaluated per epoch.")
flags.DEFINE_list("precisions", ["float32", "bfloat16"], "Operand precisions to time.")


def main(argv: list[str]) -> None:
    spec = ModelSpec(num_hiddens=tuple(int(w) for w in flags.FLAGS.num_hiddens))
    for precision in flags.FLAGS.precisions:
        floor = epoch_floor(spec, flags.FLAGS.num_train, flags.FLAGS.batch_size, precision, flags.FLAGS.num_eval)
        print(f"{precision}: epoch floor {floor['epoch_seconds']:.4f} s ({floor['steps']} steps of "
              f"{floor['step_seconds'] * 1e6:.0f} us, evaluation {floor['eval_seconds']:.4f} s); per call "
              f"{floor['per_call_epoch_seconds']:.4f} s")
        for x in floor["matmuls"]:
            print(f"  {x['name']:<20} {x['m']}x{x['k']}x{x['n']:<6} {x['seconds'] * 1e6:8.1f} us "
                  f"{x['gflops']:7.1f} GFLOP/s, per call {x['per_call_seconds'] * 1e6:8.1f} us")


if __name__ == "__main__":
    app.run(main)
