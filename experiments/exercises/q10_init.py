"""Q10: weight initialisations: normal(0.01 / 0.1 / 1), xavier, he, lecun, zeros, three seeds each.

Command: python -m experiments.report --data_dir=../shared/data/fashion_mnist --only=q10 [--smoke]
Measures: validation/test accuracy (mean ± std over seeds), divergence, and how many distinct
hidden units exist after training (zeros: the symmetry problem), concise MLP 784-256-10 ReLU,
SGD lr 0.1, 10 epochs on a fixed 20,000-example subset of the training split; every
initialisation and seed shares one shape and trains in one vmapped program.
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
    return ConfigDict(dict(
        base=dict(model="mlp", num_hiddens=[256], lr=0.1, batch_size=256, max_epochs=10, val_fraction=0.1,
                  test_at_end=True, train_subset=20000),
        inits=["normal_0.01", "normal_0.1", "normal_1", "xavier", "he", "lecun", "zeros"],
        seeds=[0, 1, 2],
        smoke=dict(base=dict(num_hiddens=[64], max_epochs=1, train_subset=2000)),
    ))
