"""The chapter's concise MLP: Dense(256) -> ReLU -> Dense(10) with Flax's default init.

Command:
  python -m experiments.train --config=experiments/configs/mlp_concise.py \
      --data_dir=../shared/data/fashion_mnist --workdir=runs/mlp_concise

Expected (2-core CPU): final val_acc (test split) 0.8657 over seeds 0-9, 95% interval [0.8630, 0.8683], single
seeds 0.856-0.869; the book's own JAX code on the same files: 0.8677 [0.8645, 0.8709] (benchmarks/book/results/).
"""

from ml_collections import ConfigDict

from mlp_research.cli import experiment_config
from mlp_research.config import Config


def get_config() -> ConfigDict:
    return experiment_config(Config().replace(model="mlp"))
