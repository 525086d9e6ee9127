"""Q2: adding hidden layers (1 to 4, and a tapered stack) with everything else fixed, three seeds each.

Command: python -m experiments.report --data_dir=../shared/data/fashion_mnist --only=q2 [--smoke]
Measures: training loss, validation/test accuracy (mean ± std over seeds) of the concise MLP
(Flax default LeCun init, so deeper stacks start with well-scaled signals; SGD lr 0.1, batch
256), 10 epochs on a fixed 20,000-example subset of the training split.
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
    return ConfigDict(dict(
        base=dict(model="mlp", lr=0.1, batch_size=256, max_epochs=10, val_fraction=0.1, test_at_end=True,
                  train_subset=20000),
        hiddens=[[256], [256, 256], [256, 256, 256], [256, 256, 256, 256], [512, 256]],
        seeds=[0, 1, 2],
        smoke=dict(hiddens=[[64], [64, 64], [64, 64, 64]], base=dict(max_epochs=1, train_subset=2000)),
    ))
