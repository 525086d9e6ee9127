"""Q6: training speed of the concise (Flax layers) and from-scratch models, per backend, as the net grows.

Command: python -m experiments.report --data_dir=../shared/data/fashion_mnist --only=q6 [--smoke]
Measures: the steady epoch time (median of the epochs after the first, evaluation of a 3,000-
example validation split included) of every registered backend (the JAX core and the torch /
TensorFlow / MXNet plugins; ones not installed are skipped), each run through the one driver,
for widths 256-4096 and depths 1-3, on a fixed 6,000-example training subset. Runs are kept per
device label in q6_speed/<device>/, so a GPU run adds columns.
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
    return ConfigDict(dict(
        base=dict(lr=0.1, batch_size=256, max_epochs=3, val_fraction=0.05, train_subset=6000),
        backends=["jax", "torch", "tensorflow", "mxnet"],
        models=["mlp_scratch", "mlp"],
        hiddens=[[256], [1024], [4096], [1024, 1024], [1024, 1024, 1024]],
        smoke=dict(hiddens=[[64], [64, 64]], base=dict(max_epochs=2, train_subset=1000)),
    ))
