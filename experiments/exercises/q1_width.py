"""Q1: accuracy as a function of the hidden width (num_hiddens 8 ... 2048), three seeds each.

Command: python -m experiments.report --data_dir=../shared/data/fashion_mnist --only=q1 [--smoke]
Measures: train/validation/test accuracy (mean ± std over seeds) and epoch time of the chapter's
from-scratch MLP (one hidden layer, ReLU, N(0, 0.01) init, SGD lr 0.1, batch 256) at each width,
10 epochs on a fixed 20,000-example subset of the training split (the seeds of a width train
together in one vmapped program).
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
    return ConfigDict(dict(
        base=dict(model="mlp_scratch", lr=0.1, batch_size=256, max_epochs=10, val_fraction=0.1, test_at_end=True,
                  train_subset=20000),
        widths=[8, 16, 32, 64, 128, 256, 512, 1024, 2048],
        seeds=[0, 1, 2],
        smoke=dict(widths=[8, 64, 256], base=dict(max_epochs=1, train_subset=2000)),
    ))
