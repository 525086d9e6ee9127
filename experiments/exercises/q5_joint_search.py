"""Q5: joint search over optimiser, learning rate, weight decay, schedule, depth, width, activation and batch size.

Command: python -m experiments.report --data_dir=../shared/data/fashion_mnist --only=q5 [--smoke] [--search_workers=2]
Measures: Optuna TPE + Hyperband on validation accuracy (study in
q5_joint_search/<study>/study.db, resumable and shareable by worker processes; set `storage` to
a database URL to share it between machines), every trial 20 epochs on the 54,000-example
training split; then the chosen configuration retrained from scratch on all 60,000 training
examples (val_fraction 0) and its test accuracy, reported once. Concise MLP.
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
    return ConfigDict(dict(
        base=dict(model="mlp", val_fraction=0.1, test_at_end=False, keep_checkpoints=1),
        space=dict(
            optimizers=["adamw", "momentum"],
            lr_factor_range=[0.2, 5.0],  # times 1e-3 for adamw, 0.05 for momentum (search.REFERENCE_LR)
            weight_decay_range=[1e-6, 0.05],
            depth_range=[1, 2],
            widths=[256, 512, 1024],
            activations=["relu", "gelu", "silu"],
            batch_sizes=[128, 256, 512],
            schedules=["cosine", "warmup_cosine"],
            warmup_epochs=1,
            epochs=20,
        ),
        n_trials=24,
        n_startup=8,
        seed=0,
        final_seeds=[0],
        storage="",
        smoke=dict(space=dict(widths=[32, 64], epochs=2), n_trials=4, n_startup=2,
                   base=dict(train_subset=2000)),
    ))
