"""Plain mxnet loop vs the mxnet backend: steady epoch time on the same batches and optimiser.

    nice -n 10 .venv/bin/python plugins/mxnet/bench.py --data_dir=../shared/data/fashion_mnist

The plain loop is the fastest idiomatic mxnet loop for each model, with no
driver and no metrics: resident arrays, the shared epoch order,
`autograd.record`, in-place SGD (`p -= lr * grad`), one `waitall()` per epoch;
the scratch model as the book writes it, the gluon one hybridized. The backend
is timed through its `Trainer` as the driver calls it (start_epoch,
train_chunk, epoch_sums; "+eval" adds the per-epoch evaluation). Epochs of the
two alternate, so load from other processes hits both alike; medians exclude
each one's first epoch.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import numpy as np
from mlp_research_mxnet.backend import MXNetBackend
from mlp_research_mxnet.framework import mxnet

from mlp_research import batching
from mlp_research.config import Config
from mlp_research.data import load_splits


def plain_loop(config: Config, images: np.ndarray, labels: np.ndarray) -> Callable[[int], None]:
    """`epoch(e)` training `config.model` with a hand-written loop (one hidden layer, relu, SGD)."""
    mx = mxnet()
    np_, npx, autograd = mx.np, mx.npx, mx.autograd
    spec = config.model
    mx.random.seed(config.seed)
    x_all = np_.array(images.reshape(len(images), -1))
    y_all = np_.array(labels, dtype=np.int64)
    pairs: list[tuple[Any, Any]]
    if spec.model == "mlp_scratch":
        W1 = np_.random.normal(scale=spec.sigma, size=(spec.num_inputs, spec.num_hiddens[0]))
        b1 = np_.zeros(spec.num_hiddens[0])
        W2 = np_.random.normal(scale=spec.sigma, size=(spec.num_hiddens[0], spec.num_outputs))
        b2 = np_.zeros(spec.num_outputs)
        for p in (W1, b1, W2, b2):
            p.attach_grad()
        pairs = [(p, p.grad) for p in (W1, b1, W2, b2)]

        def net(X: Any) -> Any:
            return np_.dot(np_.maximum(np_.dot(X.reshape((-1, spec.num_inputs)), W1) + b1, 0), W2) + b2
    else:
        nn = mx.gluon.nn
        net = nn.HybridSequential()
        net.add(nn.Dense(spec.num_hiddens[0], activation="relu"), nn.Dense(spec.num_outputs))
        net.initialize()
        net.hybridize(static_alloc=True, static_shape=True)
        net(x_all[:1])
        pairs = [(p.data(), p.grad()) for p in net.collect_params().values()]
    layout = batching.make_layout(len(labels), config.batch_size, 0)

    def epoch(e: int) -> None:
        order = np_.array(batching.epoch_order(config.seed, e, layout), dtype=np.int32)
        for s in range(layout.steps_per_epoch):
            start = s * layout.batch_size
            idx = order[start:min(start + layout.batch_size, layout.num_train)]
            X, y = np_.take(x_all, idx, axis=0), np_.take(y_all, idx, axis=0)
            with autograd.record():
                loss = -npx.pick(npx.log_softmax(net(X)), y).mean()
            loss.backward()
            for p, g in pairs:
                p -= config.lr * g
        npx.waitall()

    return epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="../shared/data/fashion_mnist")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--models", default="mlp_scratch,mlp")
    args = parser.parse_args()

    def steady(times: list[float]) -> float:
        return statistics.median(times[1:])

    rows = []
    for model in args.models.split(","):
        config = Config().replace(backend="mxnet", model=model, data_dir=args.data_dir, progress=False)
        splits = load_splits(config)
        plain = plain_loop(config, splits.train.images, splits.train.labels)
        trainer = MXNetBackend().trainer(config, splits)
        plain_t, train_t, total_t = [], [], []
        for e in range(args.epochs):
            t0 = time.perf_counter()
            plain(e)
            plain_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            trainer.start_epoch(e)
            for chunk in range(trainer.layout.chunks_per_epoch):
                trainer.train_chunk(chunk)
            trainer.epoch_sums()
            t1 = time.perf_counter()
            trainer.evaluate_eval_split()
            train_t.append(t1 - t0)
            total_t.append(time.perf_counter() - t0)
        rows.append((model, steady(plain_t), steady(train_t), steady(total_t)))
    print(f"{'model':12s} {'plain loop s/epoch':>19s} {'backend train s/epoch':>22s} {'backend +eval':>14s} "
          f"{'ratio (train)':>14s}")
    for model, p, t, total in rows:
        print(f"{model:12s} {p:19.3f} {t:22.3f} {total:14.3f} {t / p:14.2f}")


if __name__ == "__main__":
    main()
