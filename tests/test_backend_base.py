"""The base classes every backend shares (`mlp_research.backends.base`, `sums`, `adapter`)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlp_research.backends.adapter import as_backend
from mlp_research.backends.base import Backend, check_canonical, tree_map
from mlp_research.backends.sums import EpochSums, Sums
from mlp_research.batching import epoch_order, make_layout, step_batches, step_counts
from mlp_research.errors import ConfigError
from mlp_research.spec import ModelSpec


def test_step_counts_find_the_short_batch_wherever_the_order_puts_it():
    layout = make_layout(1000, 64, 5)  # 16 steps, one of 40 examples, padded to 4 chunks of 5 steps
    examples = step_counts(epoch_order(0, 0, layout, "examples"), layout)
    assert examples.tolist() == [64] * 15 + [40] + [0] * 4  # the short batch last, then the chunks' padding
    counts = step_counts(epoch_order(3, 1, layout, "batches"), layout)
    assert sorted(counts[:16].tolist()) == [40] + [64] * 15 and counts[:15].min() == 40  # somewhere mid-epoch
    batches = step_batches(epoch_order(3, 1, layout, "batches"), layout)
    assert [len(b) for b in batches] == counts[:16].tolist() and sorted(np.concatenate(batches)) == list(range(1000))
    assert all(np.array_equal(b, np.arange(b[0], b[0] + len(b))) for b in batches)  # contiguous: the book's


def test_batches_are_the_same_every_epoch_and_visited_in_a_new_order():
    layout = make_layout(1000, 64, 0)
    first, second = (step_batches(epoch_order(7, e, layout, "batches"), layout) for e in (0, 1))
    assert {tuple(b) for b in first} == {tuple(b) for b in second}
    assert [b[0] for b in first] != [b[0] for b in second]


def test_epoch_sums_add_chunks_to_what_a_resume_carried_and_find_the_first_bad_step():
    counts = np.array([64] * 15 + [40])
    sums = EpochSums(counts, Sums(10.0, 5, 64), fetch=lambda values: values)
    # Chunk 3 (steps 15..16 of the epoch) is the last and has padding outputs past the epoch: sliced off.
    sums.add(100, 5, 10, np.full(5, 2.0), np.full(5, 3))
    sums.add(105, 10, 15, np.array([1.0, np.nan, 1.0, np.inf, 1.0]), np.ones(5, int))
    sums.add(110, 15, 16, np.array([4.0, 99.0, 99.0, 99.0, 99.0]), np.array([7, 9, 9, 9, 9]))
    total = sums.total()
    assert total.count == 64 + 10 * 64 + 40 and total.correct == 5 + 15 + 5 + 7
    assert math.isnan(total.loss_sum)
    assert total.first_nonfinite_step == 106  # the counter of the first non-finite step, not its position
    fresh = EpochSums(counts, None, fetch=lambda values: values)
    assert fresh.total() == Sums(0.0, 0, 0, -1)


def test_epoch_sums_fetch_every_value_in_one_call():
    calls = []

    def fetch(values):
        calls.append(len(values))
        return values

    sums = EpochSums(np.array([64, 64]), None, fetch)
    sums.add(0, 0, 1, np.array([1.0]), np.array([2]))
    sums.add(1, 1, 2, np.array([3.0]), np.array([4]))
    assert sums.total() == Sums(4.0, 6, 128, -1) and calls == [4]


def test_canonical_parameters_are_checked_and_copied_as_float32():
    spec = ModelSpec(num_hiddens=(8,))
    good = {k: np.zeros(s, np.float64) for k, s in spec.canonical_shapes().items()}
    checked = check_canonical(spec, good)
    assert all(v.dtype == np.float32 for v in checked.values()) and checked["W1"] is not good["W1"]
    with pytest.raises(ValueError, match="lack b2"):
        check_canonical(spec, {k: v for k, v in good.items() if k != "b2"})
    with pytest.raises(ValueError, match=r"W1 has shape \(784, 9\), spec needs \(784, 8\)"):
        check_canonical(spec, {**good, "W1": np.zeros((784, 9))})
    with pytest.raises(ValueError, match="not a float"):
        check_canonical(spec, {**good, "b1": np.zeros(8, np.int32)})


def test_tree_map_keeps_named_tuples_and_dicts():
    import collections

    State = collections.namedtuple("State", "count mu")
    tree = {"step": 1, "opt_state": (State(2, {"w": 3}), ())}
    assert tree_map(lambda x: x * 10, tree) == {"step": 10, "opt_state": (State(20, {"w": 30}), ())}


def test_backend_defaults_are_one_process_one_device():
    backend = Backend()
    backend.name = "plain"
    assert (backend.process_index(), backend.process_count(), backend.agree(True, False)) == (0, 1, (True, False))
    assert not backend.trains_groups
    with pytest.raises(ConfigError, match="^--vmap: the plain backend trains one configuration at a time"):
        backend.group_trainer([], None)

    class Launch:
        def describe(self):
            return "mpirun"

    with pytest.raises(ConfigError, match="started by mpirun, but the plain backend trains in one process"):
        backend.join_processes(Launch())
    with backend.guard():
        pass


def test_a_backend_written_without_the_base_class_gets_its_defaults():
    class FromScratch:  # only what the protocol requires, and a group trainer
        optimizers = ("sgd",)

        def version(self):
            return "1.0"

        def check(self, config):
            pass

        def trainer(self, config, splits):
            return object()

        def group_trainer(self, configs, splits):
            return "group"

    adapted = as_backend(FromScratch(), "scratch")
    assert adapted.name == "scratch" and adapted.optimizers == ("sgd",)
    assert adapted.matmul_precisions == Backend.matmul_precisions and adapted.trains_groups
    assert adapted.process_count() == 1 and adapted.version() == "1.0"
    adapted.trainer(None, None).compile()  # the contract's optional compile: a no-op when absent
    assert adapted.group_trainer([], None)._trainer == "group"
    backend = Backend()
    assert as_backend(backend) is backend
