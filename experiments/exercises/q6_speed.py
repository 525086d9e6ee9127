"""Q6: training speed of the concise (Flax layers) and from-scratch models, per backend, as the net grows.

Command: python -m experiments.report --workdir=runs/report --data_dir=../shared/data/fashion_mnist --only=q6 [--smoke]
Measures: steady-state training examples/s (median of epochs after the first) for widths
256-4096 and depths 1-4, on whatever device JAX has; results are kept per device label in
q6_speed/results.json, so a GPU run adds columns. Backends: those in SPEED_BACKENDS.
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
    return ConfigDict(dict(
        base=dict(lr=0.1, batch_size=256, max_epochs=3, val_fraction=0.1),
        backends=["jax"],
        models=["mlp_scratch", "mlp"],
        hiddens=[[256], [1024], [4096], [1024, 1024], [1024, 1024, 1024], [1024, 1024, 1024, 1024]],
        train_subset=10000,
        smoke=dict(hiddens=[[64], [256], [64, 64]], base=dict(max_epochs=2), train_subset=2000),
    ))
