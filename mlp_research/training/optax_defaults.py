"""optax's default constants and per-parameter state, for backends that write optax's update rules
in their own framework (so every backend trains the same optimiser). No imports: cheap for plugins."""

ADAM_B1, ADAM_B2, ADAM_EPS, LAMB_EPS = 0.9, 0.999, 1e-8, 1e-6
RMS_DECAY, RMS_EPS = 0.9, 1e-8
ADAGRAD_INIT, ADAGRAD_EPS = 0.1, 1e-7
# The state each optimiser keeps per parameter (optax's names), with its initial value.
STATE_SLOTS: dict[str, dict[str, float]] = {
    "sgd": {},
    "momentum": {"trace": 0.0},
    "nesterov": {"trace": 0.0},
    "adam": {"mu": 0.0, "nu": 0.0},
    "adamw": {"mu": 0.0, "nu": 0.0},
    "lamb": {"mu": 0.0, "nu": 0.0},
    "rmsprop": {"nu": 0.0, "trace": 0.0},
    "adagrad": {"sum_of_squares": ADAGRAD_INIT},
}
