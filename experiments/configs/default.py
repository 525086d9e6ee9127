"""The chapter's from-scratch MLP: 784-256-10, ReLU, W ~ N(0, 0.01), SGD lr 0.1, batch 256, 10 epochs.

Command:
  python -m experiments.train --config=experiments/configs/default.py \
      --data_dir=../shared/data/fashion_mnist --workdir=runs/default

Expected (2-core CPU): final val_acc (test split) 0.8588 over seeds 0-9, 95% interval [0.8548, 0.8627], single
seeds 0.844-0.863; the book's own JAX code on the same files: 0.8612 [0.8587, 0.8637] (benchmarks/book/results/,
python -m benchmarks.book.results). About 0.3 s per epoch.
"""

from ml_collections import ConfigDict

from mlp_research.cli import experiment_config
from mlp_research.config import Config


def get_config() -> ConfigDict:
    return experiment_config(Config())
