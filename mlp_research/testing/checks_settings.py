"""Kit cases that every setting the specification says changes the result does change it in the backend.

The other cases run at fixed values (seed 0 almost everywhere), so a backend
that ignores a setting at those values passes them: one whose initialisation
ignores `--seed` would make a seed study compare identical runs. Each case here
runs two values of one setting and requires the results to differ: for
training, by at least half of what the reference's results differ by; for the
initialisation (whose random stream is the backend's own), in most weights,
while the same value twice gives the same draw.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mlp_research.optimizers import SUPPORTED
from mlp_research.testing.checks_training import train_with_reference
from mlp_research.testing.core import (
    Case,
    Kit,
    Outcome,
    expect,
    failed,
    max_diff,
    skipped,
)

TRAINING = dict(model="mlp", num_hiddens=(32,), activation="tanh", optimizer="sgd", lr=0.1)
INIT = dict(num_hiddens=(64,))
SAME_DRAW_LIMIT = 0.5  # two draws with different values agree in at most this fraction of the weights
MIN_REFERENCE_DIFF = 1e-4  # the kit's own pairs must differ clearly in the reference


@dataclasses.dataclass(frozen=True)
class Setting:
    """Two values of `field` that the specification says give different results, and what shows it."""

    name: str  # the case's name inside `setting changes the result[...]`
    field: str
    values: tuple[Any, Any]
    probe: str  # "init": the parameters a trainer starts from; "training": parameters after one epoch
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)  # the rest of the run
    why: str = ""  # what a backend that ignores it breaks


SETTINGS = (
    Setting("seed: initialisation", "seed", (0, 1), "init", dict(model="mlp_scratch"),
            "the initialisation ignores --seed, so a seed study compares identical runs (section 4)"),
    Setting("seed: initialisation, concise model", "seed", (0, 1), "init", dict(model="mlp"),
            "the concise model's initialisation ignores --seed (its framework default must be seeded too)"),
    Setting("seed: data order", "seed", (0, 1), "training", {},
            "the data order ignores --seed: use batching.epoch_order(config.seed, epoch, layout) (section 7)"),
    Setting("init", "init", ("xavier", "he_uniform"), "init", dict(model="mlp"),
            "the initialisation ignores --init (section 4)"),
    Setting("sigma", "sigma", (0.01, 0.05), "init", dict(model="mlp_scratch", init="normal"),
            "the normal initialisation ignores --sigma (section 4)"),
    Setting("lr", "lr", (0.1, 0.05), "training", {}, "the update ignores --lr (section 8)"),
    Setting("activation", "activation", ("tanh", "sigmoid"), "training", {},
            "the network ignores --activation (section 3)"),
    Setting("batch_size", "batch_size", (64, 50), "training", {}, "the batches ignore --batch_size (section 7)"),
    Setting("schedule", "schedule", ("constant", "cosine"), "training", {},
            "the learning rate ignores --schedule (section 8)"),
    Setting("max_epochs: cosine length", "max_epochs", (2, 4), "training", dict(schedule="cosine"),
            "a cosine schedule's length ignores --max_epochs (section 8)"),
    Setting("warmup_epochs", "warmup_epochs", (0.5, 1.0), "training", dict(schedule="warmup_cosine"),
            "warmup_cosine ignores --warmup_epochs (section 8)"),
    Setting("weight_decay", "weight_decay", (0.0, 0.1), "training", {},
            "the update ignores --weight_decay (section 9)"),
    Setting("momentum", "momentum", (0.9, 0.5), "training", dict(optimizer="momentum", lr=0.05),
            "the momentum optimiser ignores --momentum (section 9)"),
    *(Setting(f"optimizer: {name}", "optimizer", ("sgd", name), "training", dict(lr=0.01, weight_decay=0.01),
              f"--optimizer={name} trains like sgd (section 9)") for name in SUPPORTED if name != "sgd"),
)


def _weights(params: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.ravel(value) for name, value in sorted(params.items()) if name.startswith("W")])


def _init_probe(kit: Kit, setting: Setting) -> Outcome:
    """Three trainers: value a twice (the same draw) and value b (another draw)."""
    first, second = (dict(INIT, **setting.settings, **{setting.field: value}) for value in setting.values)
    a, again, b = (_weights(kit.trainer(kit.config(**flat)).get_params()) for flat in (first, first, second))
    if not np.array_equal(a, again):
        return failed(f"two trainers with {setting.field}={setting.values[0]} start from different parameters: the "
                      "initialisation must be a function of the config (the seed fixes the backend's own draw)")
    same = float(np.mean(a == b))
    return expect(same <= SAME_DRAW_LIMIT, f"{same:.0%} of the weights equal",
                  f"{setting.field}={setting.values[0]} and {setting.values[1]} give the same initial weights "
                  f"({same:.0%} equal): {setting.why}")


def _trained(kit: Kit, flat: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Parameters after one epoch from the same random start: (the backend's, the reference's)."""
    trainer, _, _, want = train_with_reference(kit, kit.config(**flat), 1)
    return trainer.get_params(), want


def _training_probe(kit: Kit, setting: Setting) -> Outcome:
    flats = [dict(TRAINING, **setting.settings, **{setting.field: value}) for value in setting.values]
    (got_a, want_a), (got_b, want_b) = (_trained(kit, flat) for flat in flats)
    ours, theirs = max_diff(got_a, got_b), max_diff(want_a, want_b)
    if theirs < MIN_REFERENCE_DIFF:
        return failed(f"kit error: the reference's results for {setting.values} differ by only {theirs:.2g}")
    return expect(ours >= 0.5 * theirs, f"parameters differ by {ours:.2g} (the spec's {theirs:.2g})",
                  f"{setting.field}={setting.values[0]} and {setting.values[1]} give parameters after an epoch that "
                  f"differ by {ours:.3g}, the spec's by {theirs:.3g}: {setting.why}")


def _case(setting: Setting) -> Case:
    def run(kit: Kit) -> Outcome:
        for value in setting.values:
            why = kit.supports(**setting.settings, **{setting.field: value})
            if why:
                return skipped(f"not supported: {why}")
        return PROBES[setting.probe](kit, setting)

    return Case(f"setting changes the result[{setting.name}]", run)


PROBES = {"init": _init_probe, "training": _training_probe}
CASES = tuple(_case(setting) for setting in SETTINGS)
