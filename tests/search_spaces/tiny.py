"""A tiny search on synthetic data for the tests: a trial takes a second or two."""


def get_space() -> dict:
    return dict(
        fixed=dict(dataset="synthetic", synthetic_train_size=1000, synthetic_test_size=300, batch_size=64,
                   eval_batch_size=128, val_fraction=0.2, model="mlp", num_hiddens="16", max_epochs=3,
                   checkpoint_min_seconds=0.0),
        params=dict(
            optimizer=dict(choices=["sgd", "momentum"]),
            lr=dict(low=0.01, high=0.5, log=True),
            momentum=dict(low=0.5, high=0.9, when=dict(optimizer=["momentum"])),
        ),
        budget=dict(n_trials=4),
        sampler=dict(seed=0, n_startup=2),
    )
