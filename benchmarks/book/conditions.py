"""The factor experiments' names and stored files, without JAX: shared by factors.py (runs) and results.py (reads).

A condition is the project's chapter run with some of (data order, init, short-batch loss, probe) changed; its
10 seeds are stored once as results/factors/<name>.json.
"""

from __future__ import annotations

import json
import os

RESULTS = os.path.join(os.path.dirname(__file__), "results", "factors")

# name -> (what it tests, models, the variant's settings; everything else is the project's default)
FACTORS: dict[str, tuple[str, tuple[str, ...], dict]] = {
    "data_order": ("the book's JAX loader: fixed contiguous batches, only their order reshuffled each epoch "
                   "(short batch anywhere), against reshuffled examples", ("mlp_scratch", "mlp"),
                   {"order": "fixed_batches"}),
    "data_order_composition": ("fixed batches but the short batch kept last: the batch composition alone",
                               ("mlp_scratch", "mlp"), {"order": "fixed_batches_short_last"}),
    "data_order_short_batch_position": ("reshuffled examples but the short batch (96) at a random step instead of "
                                        "just before the evaluation: its position alone", ("mlp_scratch", "mlp"),
                                        {"order": "examples_short_random"}),
    "short_batch_dropped": ("reshuffled examples with the short batch dropped (drop_last: 234 steps of 256)",
                            ("mlp_scratch", "mlp"), {"order": "examples_drop_last"}),
    "short_batch_loss_scaled": ("the short last batch's loss summed and divided by 256 instead of 96 (its update "
                                "scaled by 96/256), the project's order otherwise", ("mlp_scratch", "mlp"),
                                {"short_batch": "scaled"}),
    "init_torch_default": ("PyTorch's nn.Linear default init (weights and biases U(+-1/sqrt(fan_in))) for the "
                           "concise model, against Flax's lecun_normal kernel and zero bias", ("mlp",),
                           {"init": "torch_default"}),
}


def name(model: str, order: str = "examples", init: str = "project", short_batch: str = "mean",
         probe: bool = False, **_: object) -> str:
    """A condition's file name: model, order, init, and the extras that differ from the default."""
    out = f"{model}__order={order}__init={init}"
    out += "" if short_batch == "mean" else f"__short={short_batch}"
    return out + ("__probe" if probe else "")


def load(model: str, **changes: object) -> dict | None:
    """A stored condition's runs, or None if it has not been run."""
    path = os.path.join(RESULTS, name(model, **changes) + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


