"""Q3: what goes wrong with a hidden layer of a single neuron.

Command: python -m experiments.report --data_dir=../shared/data/fashion_mnist --only=q3 [--smoke]
Measures: for widths 1, 2, 4 and 256 over three seeds (each width's seeds in one vmapped program):
validation accuracy, how many classes the net ever predicts, the rank of its logits, dead
units and the share of images whose hidden layer is all zero. Chapter's scratch MLP, 10 epochs
on a fixed 20,000-example subset of the training split.
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
    return ConfigDict(dict(
        base=dict(model="mlp_scratch", lr=0.1, batch_size=256, max_epochs=10, val_fraction=0.1, test_at_end=True,
                  train_subset=20000),
        widths=[1, 2, 4, 256],
        seeds=[0, 1, 2],
        smoke=dict(widths=[1, 64], base=dict(max_epochs=1, train_subset=2000)),
    ))
