"""Q9: activation functions (relu, sigmoid, tanh, gelu, silu, leaky relu, elu), three seeds each.

Command: python -m experiments.report --data_dir=../shared/data/fashion_mnist --only=q9 [--smoke]
Measures: validation/test accuracy (mean ± std over seeds) of the concise MLP 784-256-10 (LeCun
init, SGD lr 0.1, batch 256) with each activation, 10 epochs on a fixed 20,000-example subset of
the training split; each activation's seeds train in one vmapped program.
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
    return ConfigDict(dict(
        base=dict(model="mlp", num_hiddens=[256], lr=0.1, batch_size=256, max_epochs=10, val_fraction=0.1,
                  test_at_end=True, train_subset=20000),
        activations=["relu", "sigmoid", "tanh", "gelu", "silu", "leaky_relu", "elu"],
        seeds=[0, 1, 2],
        smoke=dict(activations=["relu", "sigmoid", "tanh"], base=dict(num_hiddens=[64], max_epochs=1,
                                                                      train_subset=2000)),
    ))
