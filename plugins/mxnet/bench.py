"""Plain mxnet loop vs the mxnet backend: steady epoch time on the same batches and optimiser.

    nice -n 10 .venv/bin/python plugins/mxnet/bench.py --data_dir=../shared/data/fashion_mnist

The plain loop is the fastest idiomatic mxnet loop for the model, written with
no driver and no metrics bookkeeping: resident arrays, the shared epoch order,
`autograd.record`, in-place SGD (`p -= lr * p.grad`), one `waitall()` per epoch.
The backend is timed through its `Trainer` exactly as the driver calls it
(start_epoch, train_chunk, epoch_sums), with and without the per-epoch evaluation.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from mlp_research_mxnet.backend import MXNetBackend
from mlp_research_mxnet.framework import mxnet

from mlp_research import batching
from mlp_research.config import Config
from mlp_research.data import load_splits


def plain_loop_scratch(config: Config, images: np.ndarray, labels: np.ndarray, epochs: int) -> list[float]:
    """Epoch times of the book's scratch model in a hand-written loop (one hidden layer)."""
    mx = mxnet()
    np_, npx, autograd = mx.np, mx.npx, mx.autograd
    spec = config.model
    mx.random.seed(config.seed)
    x_all = np_.array(images.reshape(len(images), -1))
    y_all = np_.array(labels, dtype=np.int32)
    params = []
    for name, shape in spec.canonical_shapes().items():
        p = np_.random.normal(scale=spec.sigma, size=shape) if name.startswith("W") else np_.zeros(shape)
        p.attach_grad()
        params.append(p)
    W1, b1, W2, b2 = params

    def net(X):
        return np_.dot(np_.maximum(np_.dot(X, W1) + b1, 0), W2) + b2

    layout = batching.make_layout(len(labels), config.batch_size, 0)
    times = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        order = np_.array(batching.epoch_order(config.seed, epoch, layout), dtype=np.int32)
        for s in range(layout.steps_per_epoch):
            start = s * layout.batch_size
            count = min(layout.batch_size, layout.num_train - start)
            idx = order[start:start + count]
            X, y = np_.take(x_all, idx, axis=0), np_.take(y_all, idx, axis=0)
            with autograd.record():
                loss = -npx.pick(npx.log_softmax(net(X)), y).mean()
            loss.backward()
            for p in params:
                p -= config.lr * p.grad
        npx.waitall()
        times.append(time.perf_counter() - t0)
    return times


def plain_loop_gluon_grads(config: Config, images: np.ndarray, labels: np.ndarray, epochs: int) -> list[float]:
    """The gluon plain loop, with gradients read through `Parameter.grad()`."""
    mx = mxnet()
    np_, npx, autograd, nn = mx.np, mx.npx, mx.autograd, mx.gluon.nn
    spec = config.model
    mx.random.seed(config.seed)
    x_all = np_.array(images.reshape(len(images), -1))
    y_all = np_.array(labels, dtype=np.int32)
    net = nn.HybridSequential()
    net.add(nn.Dense(spec.num_hiddens[0], activation="relu"), nn.Dense(spec.num_outputs))
    net.initialize()
    net.hybridize(static_alloc=True, static_shape=True)
    net(x_all[:1])
    pairs = [(p.data(), p.grad()) for p in net.collect_params().values()]
    layout = batching.make_layout(len(labels), config.batch_size, 0)
    times = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        order = np_.array(batching.epoch_order(config.seed, epoch, layout), dtype=np.int32)
        for s in range(layout.steps_per_epoch):
            start = s * layout.batch_size
            count = min(layout.batch_size, layout.num_train - start)
            idx = order[start:start + count]
            X, y = np_.take(x_all, idx, axis=0), np_.take(y_all, idx, axis=0)
            with autograd.record():
                loss = -npx.pick(npx.log_softmax(net(X)), y).mean()
            loss.backward()
            for p, g in pairs:
                p -= config.lr * g
        npx.waitall()
        times.append(time.perf_counter() - t0)
    return times


def backend_epochs(config: Config, splits, epochs: int) -> tuple[list[float], list[float]]:
    """(train-only, train + evaluation) epoch times through the backend's Trainer."""
    trainer = MXNetBackend().trainer(config, splits)
    train_times, total_times = [], []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        trainer.start_epoch(epoch)
        for chunk in range(trainer.layout.chunks_per_epoch):
            trainer.train_chunk(chunk)
        trainer.epoch_sums()
        t1 = time.perf_counter()
        trainer.evaluate_eval_split()
        train_times.append(t1 - t0)
        total_times.append(time.perf_counter() - t0)
    return train_times, total_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="../shared/data/fashion_mnist")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--models", default="mlp_scratch,mlp")
    args = parser.parse_args()
    steady = lambda times: statistics.median(times[1:])  # noqa: E731 -- the first epoch warms caches
    print(f"{'model':12s} {'plain loop s/epoch':>19s} {'backend train s/epoch':>22s} {'backend +eval':>14s} "
          f"{'ratio':>6s}")
    for model in args.models.split(","):
        config = Config().replace(backend="mxnet", model=model, data_dir=args.data_dir, progress=False)
        splits = load_splits(config)
        images, labels = splits.train.images, splits.train.labels
        plain = plain_loop_scratch(config, images, labels, args.epochs) if model == "mlp_scratch" else \
            plain_loop_gluon_grads(config, images, labels, args.epochs)
        train, total = backend_epochs(config, splits, args.epochs)
        print(f"{model:12s} {steady(plain):19.3f} {steady(train):22.3f} {steady(total):14.3f} "
              f"{steady(train) / steady(plain):6.2f}", flush=True)


if __name__ == "__main__":
    main()
