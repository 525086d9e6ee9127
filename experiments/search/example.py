"""Example search: the concise MLP's optimiser, learning rate, momentum (only for momentum), width and activation.

Command (two workers on this machine; the same command with --storage=postgresql://... on other machines joins):
  python -m experiments.search --space=experiments/search/example.py --workdir=runs/search \
      --data_dir=../shared/data/fashion_mnist --workers=2 --n_trials=12

Budget: 12 trials of at most 6 epochs on the 54,000-example training split (6,000 held out for validation),
pruned by Hyperband after 1 or 3 epochs. Measured on a quiet 2-core CPU: 12 trials (5 complete, 7 pruned) in
22 s, best val_acc 0.8868 (adam, one layer of 256); shared with other work (load 9-12): 82-118 s, best
0.883-0.885. Every trial's run is in runs/search/trials/N/, the table and importances in runs/search/search.md.
"""


def get_space() -> dict:
    return dict(
        # Any experiments.train setting, shared by every trial.
        fixed=dict(model="mlp", val_fraction=0.1, max_epochs=6, schedule="cosine"),
        # Sampled per trial: ranges (log for rates), choices, and a condition (momentum only with momentum).
        params=dict(
            optimizer=dict(choices=["sgd", "momentum", "adam"]),
            lr=dict(low=3e-4, high=0.3, log=True),
            momentum=dict(low=0.8, high=0.95, when=dict(optimizer=["momentum"])),
            num_hiddens=dict(choices=["128", "256", "256,128"]),
            activation=dict(choices=["relu", "gelu"]),
            batch_size=dict(choices=[128, 256]),
        ),
        objective=dict(metric="val_acc", direction="maximize"),
        budget=dict(n_trials=12),
        sampler=dict(name="tpe", seed=0, n_startup=4),
        pruner=dict(name="hyperband", min_epochs=1, reduction_factor=3),
    )
