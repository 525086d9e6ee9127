"""Q5: joint search over optimiser, learning rate, depth, widths, activation, batch size and epochs.

Command: python -m experiments.report --workdir=runs/report --data_dir=../shared/data/fashion_mnist --only=q5 [--smoke]
Measures: Optuna TPE + Hyperband on validation accuracy (study in q5_joint_search/study.db,
resumable; set `storage` to a database URL to share it between workers), then the test
accuracy of the chosen configuration, evaluated once. Concise MLP, cosine schedule.
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
    return ConfigDict(dict(
        base=dict(model="mlp", schedule="cosine", val_fraction=0.1, test_at_end=False),
        space=dict(
            optimizers=["adam", "momentum"],
            lr_range=dict(adam=[1e-4, 3e-3], momentum=[3e-3, 0.3]),
            depth_range=[1, 3],
            widths=[128, 256, 512, 1024],
            activations=["relu", "gelu", "silu"],
            batch_sizes=[128, 256, 512],
            epochs=[5, 10, 15],
        ),
        n_trials=40,
        timeout_s=1200,
        seed=0,
        storage="",
        train_subset=0,
        smoke=dict(space=dict(widths=[32, 64], depth_range=[1, 2], epochs=[1, 2]), n_trials=3, timeout_s=0,
                   train_subset=4000),
    ))
