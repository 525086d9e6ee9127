"""Q5's joint search: optimiser, learning rate, weight decay, depth, width, activation, batch size and epochs.

Command (one rerun of Q5's protocol; the report runs three sampler seeds and a random baseline):
  python -m experiments.search --space=experiments/search/q5.py --workdir=runs/q5_search \
      --data_dir=../shared/data/fashion_mnist --workers=2 [--seed=1] [--sampler=random]

The number of epochs is searched (the question names it): trials of 4 to 12 epochs with a cosine
schedule over their own length, so Hyperband compares them at equal shares of their schedules. The
learning rate is a factor of each optimiser's usual rate, so one parameter serves both optimisers and
its importance can be read across them. Every trial trains on the 54,000-example split and is judged
on the 6,000 held-out examples; the test split is never seen.
"""


def get_space() -> dict:
    return dict(
        fixed=dict(model="mlp", val_fraction=0.1, schedule="cosine", test_at_end=False),
        params=dict(
            optimizer=dict(choices=["adamw", "momentum"]),
            lr_factor=dict(low=0.25, high=4.0, log=True, type="float"),
            weight_decay=dict(low=1e-6, high=1e-2, log=True),
            depth=dict(low=1, high=2, type="int"),
            width=dict(choices=[128, 256, 512]),
            activation=dict(choices=["relu", "gelu"]),
            batch_size=dict(choices=[128, 256]),
            max_epochs=dict(low=4, high=12),
        ),
        objective=dict(metric="val_acc", direction="maximize"),
        budget=dict(n_trials=16),
        sampler=dict(name="tpe", seed=0, n_startup=6),
        pruner=dict(name="hyperband", min_epochs=1, reduction_factor=3),
    )


def derive(params: dict) -> dict:
    """The fields the sampled parameters stand for: lr from its factor of the optimiser's usual rate, the widths."""
    usual_lr = {"adamw": 1e-3, "momentum": 0.05}
    return dict(lr=usual_lr[params["optimizer"]] * params["lr_factor"],
                num_hiddens=[params["width"]] * params["depth"])
