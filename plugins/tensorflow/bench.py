"""Steady epoch time: the fastest plain TensorFlow loops we could write vs the backend's trainer.

    python plugins/tensorflow/bench.py --data_dir=../shared/data/fashion_mnist [--epochs=4]

Every variant trains the default model (the book's from-scratch MLP, 784-256-10,
SGD lr 0.1, batch 256) on the same resident data in the same batch order
(`mlp_research.batching.epoch_order`); no driver, no checkpoints. Variants are
timed in interleaved rounds (the machine is shared), and the median epoch of
each is reported; epoch 0 (tracing) is dropped. Times are training only; the
backend line "+eval" adds the per-epoch test-set evaluation the driver does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from mlp_research.backends import registry as backends, batching  # noqa: E402
from mlp_research.config import Config  # noqa: E402
from mlp_research.data import load_splits  # noqa: E402


def plain_variants(config: Config, images: np.ndarray, labels: np.ndarray) -> dict[str, Callable[[int], None]]:
    """Hand-written loops, each returning `epoch(e)` that trains one epoch and waits for it."""
    import tensorflow as tf

    spec, layout = config.model, batching.make_layout(len(labels), config.batch_size, 0)
    x, y = tf.constant(images), tf.constant(labels)
    n, b = layout.num_train, layout.batch_size

    def make_params() -> list[tf.Variable]:
        h = spec.num_hiddens[0]
        return [tf.Variable(tf.random.stateless_normal((784, h), seed=[0, 0]) * spec.sigma), tf.Variable(tf.zeros(h)),
                tf.Variable(tf.random.stateless_normal((h, 10), seed=[0, 1]) * spec.sigma), tf.Variable(tf.zeros(10))]

    def forward(params: list[tf.Variable], X: Any) -> Any:
        X = tf.reshape(X, (-1, 784))
        H = tf.math.maximum(tf.matmul(X, params[0]) + params[1], 0)
        return tf.matmul(H, params[2]) + params[3]

    def loss_fn(params: list[tf.Variable], X: Any, Y: Any) -> Any:
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=Y, logits=forward(params, X)))

    def per_step(jit: bool, keras_opt: bool) -> Callable[[int], None]:
        params = make_params()
        opt = tf.keras.optimizers.SGD(config.lr) if keras_opt else None

        @tf.function(jit_compile=jit)
        def step(X: Any, Y: Any) -> Any:
            with tf.GradientTape() as tape:
                loss = loss_fn(params, X, Y)
            grads = tape.gradient(loss, params)
            if opt is not None:
                opt.apply_gradients(zip(grads, params))
            else:
                for p, g in zip(params, grads):
                    p.assign_sub(config.lr * g)
            return loss

        def epoch(e: int) -> None:
            order = batching.epoch_order(config.seed, e, layout)
            loss = None
            for s in range(layout.steps_per_epoch):
                idx = tf.constant(order[s * b:min((s + 1) * b, n)])
                loss = step(tf.gather(x, idx), tf.gather(y, idx))
            float(loss)

        return epoch

    def in_graph() -> Callable[[int], None]:
        params = make_params()

        @tf.function
        def run_epoch(order: Any) -> Any:
            total = tf.constant(0.0)
            for s in tf.range(layout.steps_per_epoch):
                start = s * b
                idx = order[start:tf.minimum(start + b, n)]
                with tf.GradientTape() as tape:
                    loss = loss_fn(params, tf.gather(x, idx), tf.gather(y, idx))
                for p, g in zip(params, tape.gradient(loss, params)):
                    p.assign_sub(config.lr * g)
                total += loss
            return total

        return lambda e: float(run_epoch(tf.constant(batching.epoch_order(config.seed, e, layout))))

    def in_graph_xla() -> Callable[[int], None]:
        """Whole epoch as one XLA computation: fixed batch shape, the short last batch padded with weight 0."""
        params = make_params()

        @tf.function(jit_compile=True)
        def run_epoch(order: Any) -> Any:
            total = tf.constant(0.0)
            for s in tf.range(layout.steps_per_epoch):
                start = s * b
                idx = tf.slice(order, [start], [b])
                w = tf.cast(start + tf.range(b) < n, tf.float32)
                with tf.GradientTape() as tape:
                    logits = forward(params, tf.gather(x, idx))
                    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.gather(y, idx), logits=logits)
                    loss = tf.reduce_sum(ce * w) / tf.reduce_sum(w)
                for p, g in zip(params, tape.gradient(loss, params)):
                    p.assign_sub(config.lr * g)
                total += loss
            return total

        return lambda e: float(run_epoch(tf.constant(batching.epoch_order(config.seed, e, layout))))

    return {
        "plain: tf.function step + Keras SGD, Python loop": per_step(jit=False, keras_opt=True),
        "plain: tf.function step, hand SGD, Python loop": per_step(jit=False, keras_opt=False),
        "plain: XLA (jit_compile) step, Python loop": per_step(jit=True, keras_opt=False),
        "plain: whole epoch in one tf.function": in_graph(),
        "plain: whole epoch in one XLA tf.function": in_graph_xla(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="../shared/data/fashion_mnist")
    parser.add_argument("--epochs", type=int, default=4, help="timed epochs per variant (after one warm-up)")
    parser.add_argument("--dataset", default="fashion_mnist", choices=["fashion_mnist", "synthetic"])
    args = parser.parse_args()

    config = Config().replace(backend="tensorflow", dataset=args.dataset, data_dir=args.data_dir, progress=False)
    splits = load_splits(config)
    backends.load("tensorflow").check(config)
    from mlp_research_tensorflow.trainer import TensorFlowTrainer

    def backend_epochs(jit_compile: bool, evaluate: bool) -> Callable[[int], None]:
        trainer = TensorFlowTrainer(config, splits, jit_compile=jit_compile)

        def epoch(e: int) -> None:
            trainer.start_epoch(e)
            for chunk in range(trainer.layout.chunks_per_epoch):
                trainer.train_chunk(chunk)
            trainer.epoch_sums()
            if evaluate:
                trainer.evaluate_eval_split()

        return epoch

    variants = plain_variants(config, splits.train.images, splits.train.labels)
    variants["backend: TensorFlowTrainer (train_chunk)"] = backend_epochs(jit_compile=True, evaluate=False)
    variants["backend: +eval (the driver's epoch)"] = backend_epochs(jit_compile=True, evaluate=True)
    variants["backend: jit_compile=False"] = backend_epochs(jit_compile=False, evaluate=False)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for e in range(args.epochs + 1):  # round 0 is the warm-up (tracing, XLA compiles)
        for name, epoch in variants.items():
            t0 = time.perf_counter()
            epoch(e)
            if e:
                times[name].append(time.perf_counter() - t0)

    medians = {name: statistics.median(ts) for name, ts in times.items()}
    fastest_plain = min(v for k, v in medians.items() if k.startswith("plain"))
    print(f"{'variant':52s} {'s/epoch':>8s} {'vs fastest plain':>17s}")
    for name, seconds in medians.items():
        print(f"{name:52s} {seconds:8.3f} {seconds / fastest_plain:16.2f}x")
    ratio = medians["backend: TensorFlowTrainer (train_chunk)"] / fastest_plain
    print(f"backend / fastest plain loop: {ratio:.2f}x ({'within' if ratio <= 1.5 else 'OVER'} the 1.5x bound)")


if __name__ == "__main__":
    main()
