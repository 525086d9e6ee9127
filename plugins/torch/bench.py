"""Steady epoch time: the fastest plain torch loop we can write vs the torch backend's trainer.

    .venv/bin/python plugins/torch/bench.py [--data_dir=../shared/data/fashion_mnist] [--epochs=4]

Both train the default model (784-256-10, scratch init N(0, 0.01), relu, SGD lr
0.1, batch 256) on resident tensors with the same shared epoch order, and each
epoch ends with a test-set evaluation, as the driver's epochs do. The plain loop
has no driver, no metric buffers and no schedule hook: fused `addmm` layers, an
in-place relu, for-each SGD. Epochs of the two alternate, so a machine whose
load changes affects both alike; the steady time is the median after epoch 1.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from mlp_research_torch.trainer import TorchTrainer
from torch.nn import functional as F

from mlp_research import batching
from mlp_research.config import Config
from mlp_research.data import load_splits


class PlainLoop:
    """The hand-tuned reference: what the backend's per-step work should cost."""

    def __init__(self, config: Config, splits, layout: batching.EpochLayout):
        torch.manual_seed(config.seed)
        sizes = config.model.layer_sizes
        self.W1 = (torch.randn(sizes[0], sizes[1]) * config.model.sigma).requires_grad_()
        self.b1 = torch.zeros(sizes[1], requires_grad=True)
        self.W2 = (torch.randn(sizes[1], sizes[2]) * config.model.sigma).requires_grad_()
        self.b2 = torch.zeros(sizes[2], requires_grad=True)
        self.opt = torch.optim.SGD([self.W1, self.b1, self.W2, self.b2], lr=config.lr, foreach=True)
        self.x = torch.from_numpy(splits.train.images.reshape(len(splits.train), -1))
        self.y = torch.from_numpy(splits.train.labels.astype(np.int64))
        self.test_x = torch.from_numpy(splits.eval.images.reshape(len(splits.eval), -1))
        self.test_y = torch.from_numpy(splits.eval.labels.astype(np.int64))
        self.config, self.layout = config, layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b2, torch.addmm(self.b1, x, self.W1).relu_(), self.W2)

    def epoch(self, epoch: int) -> float:
        order = torch.from_numpy(batching.epoch_order(self.config.seed, epoch, self.layout)[: self.layout.num_train]
                                 .astype(np.int64))
        batch = self.layout.batch_size
        for start in range(0, self.layout.num_train, batch):
            idx = order[start: start + batch]
            loss = F.cross_entropy(self.forward(self.x[idx]), self.y[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        with torch.inference_mode():
            correct = sum(int((self.forward(self.test_x[i: i + 2048]).argmax(1) == self.test_y[i: i + 2048]).sum())
                          for i in range(0, len(self.test_y), 2048))
        return correct / len(self.test_y)


def backend_epoch(trainer: TorchTrainer, epoch: int) -> float:
    """One epoch exactly as the driver runs it: chunks, the eval split, the epoch's sums."""
    trainer.start_epoch(epoch)
    for chunk in range(trainer.layout.chunks_per_epoch):
        trainer.train_chunk(chunk)
    val = trainer.evaluate_eval_split()
    trainer.epoch_sums()
    return val.correct / val.count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="../shared/data/fashion_mnist")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    config = Config().replace(backend="torch", data_dir=args.data_dir, progress=False)
    splits = load_splits(config)
    trainer = TorchTrainer(config, splits)  # sets the thread count both use
    plain = PlainLoop(config, splits, trainer.layout)
    times: dict[str, list[float]] = {"plain torch loop": [], "torch backend": []}
    accs: dict[str, float] = {}
    for epoch in range(args.epochs):
        for name, run in (("plain torch loop", plain.epoch), ("torch backend", lambda e: backend_epoch(trainer, e))):
            t0 = time.perf_counter()
            accs[name] = run(epoch)
            times[name].append(time.perf_counter() - t0)
    steady = {name: statistics.median(t[1:] if len(t) > 1 else t) for name, t in times.items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {trainer.describe()['device']}, "
          f"{len(splits.train)} train examples, batch {config.batch_size}, {args.epochs} epochs each (alternating)")
    print(f"{'loop':<18} {'steady s/epoch':>15} {'all epochs (s)':>32} {'test acc':>9}")
    for name in times:
        print(f"{name:<18} {steady[name]:>15.3f} {' '.join(f'{t:.3f}' for t in times[name]):>32} {accs[name]:>9.4f}")
    ratio = steady["torch backend"] / steady["plain torch loop"]
    print(f"backend / plain = {ratio:.2f}x ({'within' if ratio <= 1.5 else 'OUTSIDE'} the 1.5x budget)")


if __name__ == "__main__":
    main()
