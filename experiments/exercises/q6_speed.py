"""Q6: training speed of the concise (Flax layers) and from-scratch models, per backend, as the net grows.

Command: python -m experiments.report --workdir=runs/report --data_dir=../shared/data/fashion_mnist --only=q6 [--smoke]
Measures: steady-state training examples/s (median of epochs after the first) for widths
256-4096 and depths 1-4, through each registered backend's Trainer (the JAX core and the
torch / TensorFlow / MXNet plugins; ones not installed are skipped), on a 10,000-example
subset. Results are kept per device label in q6_speed/results.json, so a GPU run adds columns.
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
    return ConfigDict(dict(
        base=dict(lr=0.1, batch_size=256, max_epochs=3, val_fraction=0.1),
        backends=["jax", "torch", "tensorflow", "mxnet"],
        models=["mlp_scratch", "mlp"],
        hiddens=[[256], [1024], [4096], [1024, 1024], [1024, 1024, 1024], [1024, 1024, 1024, 1024]],
        train_subset=10000,
        smoke=dict(hiddens=[[64], [256], [64, 64]], base=dict(max_epochs=2), train_subset=2000),
    ))
