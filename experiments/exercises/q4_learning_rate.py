"""Q4: learning rate x epochs grid over three seeds, and vmap's speed-up over sequential runs.

Command: python -m experiments.report --data_dir=../shared/data/fashion_mnist --only=q4 [--smoke]
Measures: validation accuracy (mean ± std over seeds) for each learning rate after 1, 2, 5, 10
and 20 epochs (constant rate: every budget is read off one 20-epoch run per rate and seed, all
rates and seeds in one vmapped program), on a fixed 20,000-example subset of the training split;
and the throughput of training `speed_lrs` together with jax.vmap vs one after another.
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
    return ConfigDict(dict(
        base=dict(model="mlp_scratch", lr=0.1, batch_size=256, schedule="constant", val_fraction=0.1,
                  test_at_end=True, train_subset=20000),
        lrs=[0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0],
        seeds=[0, 1, 2],
        epoch_budgets=[1, 2, 5, 10, 20],
        speed_lrs=[0.01, 0.03, 0.1, 0.3],
        speed_epochs=3,
        smoke=dict(lrs=[0.03, 0.3, 3.0], epoch_budgets=[1, 2], speed_lrs=[0.1, 0.3], speed_epochs=2,
                   base=dict(train_subset=2000)),
    ))
