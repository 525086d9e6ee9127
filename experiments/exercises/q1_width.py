"""Q1: accuracy as a function of the hidden width (num_hiddens 8 ... 4096).

Command: python -m experiments.report --workdir=runs/report --data_dir=../shared/data/fashion_mnist --only=q1 [--smoke]
Measures: train/validation/test accuracy and epoch time of the chapter's from-scratch MLP
(one hidden layer, ReLU, N(0, 0.01) init, SGD lr 0.1, batch 256) at each width, 10 epochs.
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
    return ConfigDict(dict(
        base=dict(model="mlp_scratch", lr=0.1, batch_size=256, max_epochs=10, val_fraction=0.1, test_at_end=True),
        widths=[8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096],
        train_subset=0,
        smoke=dict(widths=[8, 64, 512], base=dict(max_epochs=1), train_subset=4000),
    ))
