"""Q4: learning rate x epochs grid, and vmap's speed-up over sequential runs.

Command: python -m experiments.report --workdir=runs/report --data_dir=../shared/data/fashion_mnist --only=q4 [--smoke]
Measures: validation accuracy for each learning rate after 1, 2, 5, 10 and 20 epochs (constant
rate: every budget is read off one 20-epoch run per rate, all rates in one vmapped program),
and the throughput of training `speed_lrs` together with jax.vmap vs one after another.
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
    return ConfigDict(dict(
        base=dict(model="mlp_scratch", lr=0.1, batch_size=256, schedule="constant", val_fraction=0.1,
                  test_at_end=True),
        lrs=[0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0],
        epoch_budgets=[1, 2, 5, 10, 20],
        speed_lrs=[0.01, 0.03, 0.1, 0.3],
        speed_epochs=3,
        train_subset=0,
        smoke=dict(lrs=[0.03, 0.3, 3.0], epoch_budgets=[1, 2], speed_lrs=[0.1, 0.3], speed_epochs=2,
                   train_subset=4000),
    ))
