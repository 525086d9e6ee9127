"""The conformance kit checked on itself, and the JAX core checked by it.

A kit that passes everything proves nothing, so it is held against the example
backend written from the documentation alone (`mlp_research.testing.example_backend`):
that backend must pass every case that applies to it and be skipped, with the
reason, on what it does not declare; and each of a few one-line bugs in it
(tests/kit_backends/broken.py) must fail named cases whose text says what is
wrong. The JAX core runs the kit like any plugin, naming the cases it may skip,
and `python -m mlp_research.testing.check_backend` is checked from the command line.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Iterable, Iterator

import pytest
from kit_backends import broken

from mlp_research.optimizers import SUPPORTED
from mlp_research.testing import checks_extra, checks_group, checks_model, checks_settings, checks_training
from mlp_research.testing import kit as kit_lib
from mlp_research.testing.example_backend import NumpyBackend

REPO = Path(__file__).resolve().parents[1]
UNDECLARED = [name for name in SUPPORTED if name not in NumpyBackend.optimizers]
# What the example backend is skipped on, and nothing else: it is handed to the kit as an object (no entry
# point), trains groups, declares two optimisers, and has no framework default of its own for the concise model.
EXPECTED_SKIPS = {
    "loads", "refuses --vmap without group_trainer", "init[mlp,default]", "init shape[mlp,default]",
    "init shape[mlp_scratch,zeros]", "init shape[mlp,zeros]",
    *(f"training[mlp,{name}]" for name in UNDECLARED),
    *(f"training[mlp,{name},wd=0.01,cosine,momentum=0.8]" for name in UNDECLARED),
    *(f"setting changes the result[optimizer: {name}]" for name in UNDECLARED),
}
# What the JAX core may skip: the concise model's default is the framework's own, zeros are exact, it trains
# groups, and it evaluates its own checkpoints in every other case.
JAX_SKIPS = {
    "init[mlp,default]", "init shape[mlp,default]", "init shape[mlp_scratch,zeros]", "init shape[mlp,zeros]",
    "refuses --vmap without group_trainer", *kit_lib.case_names("cross-evaluation[a jax checkpoint"),
}
ROUND_TRIPS = {f"state round trip, leaf by leaf[{model}]" for model in ("mlp_scratch", "mlp")}
# The cases a bug in training, the model or a group can show in (initial statistics, registration, the driver
# and cross-evaluation cannot see any of the variants, and cost the most).
VARIANT_CASES = [case for case in (*checks_model.CASES, *checks_training.CASES, *checks_extra.CASES,
                                   *checks_settings.CASES, *checks_group.CASES)
                 if not case.name.startswith(("init[", "init shape"))]
SEED_INIT = {"setting changes the result[seed: initialisation]",
             "setting changes the result[seed: initialisation, concise model]"}


@pytest.fixture(scope="module")
def numpy_kit() -> Iterator[kit_lib.Kit]:
    kit = kit_lib.Kit(NumpyBackend())
    yield kit
    kit.close()


@pytest.fixture(scope="module")
def jax_kit() -> Iterator[kit_lib.Kit]:
    kit = kit_lib.Kit("jax")
    yield kit
    kit.close()


@pytest.mark.parametrize("case", kit_lib.pytest_cases())
def test_a_backend_written_from_the_documentation_passes_the_kit(case: kit_lib.Case, numpy_kit: kit_lib.Kit) -> None:
    outcome = kit_lib.run_case(case, numpy_kit)
    if case.name in EXPECTED_SKIPS:
        assert outcome.status == "skip", f"{case.name} should be skipped: {outcome}"
        if "training" in case.name or "optimizer" in case.name:
            assert "is not available in the numpy backend; choose one of sgd, momentum" in outcome.detail
        pytest.skip(outcome.detail)
    assert outcome.status == "pass", f"{case.name}: {outcome.detail} ({outcome.figure})"


def _failures(backend: NumpyBackend, cases: Iterable[kit_lib.Case] = VARIANT_CASES) -> dict[str, str]:
    kit = kit_lib.Kit(backend)
    try:
        outcomes = {case.name: kit_lib.run_case(case, kit) for case in cases}
    finally:
        kit.close()
    return {name: outcome.detail for name, outcome in outcomes.items() if outcome.status == "fail"}


def _variant(name: str) -> dict[str, str]:
    return _failures(broken.backend_for(broken.VARIANTS[name]))


def _extra_training() -> set[str]:
    """The extra training cases the numpy backend runs: every activation, and sgd and momentum."""
    settings = {f"training[mlp,{name},wd=0.01,cosine,momentum=0.8]" for name in NumpyBackend.optimizers}
    return settings | {case.name for case in checks_extra.CASES
                       if case.name.startswith("training[mlp,sgd,") and "wd=" not in case.name}


def test_a_wrong_activation_constant_fails_the_leaky_relu_cases() -> None:
    failures = _variant("leaky_relu slope 0.02")
    assert set(failures) == {"logits[mlp_scratch,leaky_relu,2 layers]", "logits[mlp,leaky_relu,2 layers]",
                             "activation values[leaky_relu]", "training[mlp,sgd,leaky_relu]"}
    assert failures["logits[mlp,leaky_relu,2 layers]"].startswith("logits differ from the spec by ")
    assert "leaky_relu(-25) gives -0.5" in failures["activation values[leaky_relu]"]
    assert "the spec's -0.25" in failures["activation values[leaky_relu]"]


def test_a_data_order_other_than_epoch_order_fails_every_training_case() -> None:
    failures = _variant("sequential batches")
    kit_cases = {"training[mlp_scratch,sgd]", "training[mlp,sgd]", "training[mlp,momentum]"}
    seed_order = "setting changes the result[seed: data order]"
    # Unshuffled batches of 64 and of 50 start on the same examples, so the two runs differ less than the spec's.
    batch_size = "setting changes the result[batch_size]"
    assert set(failures) == kit_cases | _extra_training() | {"uneven chunks", seed_order, batch_size}
    for name in kit_cases | {"uneven chunks"}:
        assert re.search(r"count/correct.* the spec's .*\(data order, batch rule or loss before the update\?\)",
                         failures[name]), failures[name]
    assert "the data order ignores --seed: use batching.epoch_order" in failures[seed_order]


def test_a_restore_that_drops_the_optimiser_state_fails_the_round_trips() -> None:
    failures = _variant("load_state_dict drops the optimiser state")
    group = "group[state round trip, member by member]"
    assert set(failures) == {"state_dict round trip", *ROUND_TRIPS, group}
    assert "load_state_dict must restore the parameters, the optimiser state" in failures["state_dict round trip"]
    for name in ROUND_TRIPS:
        assert failures[name].endswith("the state loaded in its leaf ['opt']['trace']['W1']"), failures[name]
    want = f"member 0, its leaf ['opt']['trace']['W1'] ({checks_group.RESTORE})"
    assert failures[group].endswith(want), failures[group]


def test_a_restore_that_drops_the_step_counter_fails_the_round_trips() -> None:
    """The kit's round trip continues under a decaying schedule, so a lost step counter is another learning rate;
    the leaf-by-leaf round trip names the leaf, and a divergence after the restore reports the wrong step."""
    failures = _variant("load_state_dict drops the step counter")
    assert set(failures) == {"state_dict round trip", *ROUND_TRIPS, "group[state round trip, member by member]",
                             "non-finite loss step counts updates"}
    assert "step counter" in failures["state_dict round trip"]
    for name in ROUND_TRIPS:
        assert failures[name].endswith("differs from the state loaded in its leaf ['step']"), failures[name]


def test_an_initialisation_that_ignores_the_seed_fails_the_seed_cases_and_nothing_else() -> None:
    """Every other case runs at one seed, so only the settings cases can see it."""
    failures = _variant("the initialisation ignores the seed")
    assert set(failures) == SEED_INIT
    for name in SEED_INIT:
        assert failures[name].startswith("seed=0 and 1 give the same initial weights (100% equal): "), failures[name]
    assert "so a seed study compares identical runs" in failures["setting changes the result[seed: initialisation]"]


def test_a_first_nonfinite_step_kept_across_epochs_fails_the_non_finite_case() -> None:
    failures = _variant("first_nonfinite_step kept across epochs")
    assert failures == {"non-finite loss step": "the epoch after the one that reported 13 reports 13, want 20: "
                        "first_nonfinite_step is part of an epoch's sums, so start_epoch without sums starts it at -1"}


def test_a_first_nonfinite_step_derived_from_the_epoch_fails_when_the_counter_differs() -> None:
    failures = _variant("first_nonfinite_step from the epoch, not the step counter")
    assert failures == {"non-finite loss step counts updates": (
        "the first step after 20 updates, in epoch 2 of a training set of 8 steps, reports first_nonfinite_step "
        "16 = epoch * steps_per_epoch: it is the trainer's step counter, which continues across a resume on a "
        "training set of another size")}


@pytest.mark.parametrize("setting", [s for s in checks_settings.SETTINGS if s.field != "optimizer" or
                                     s.values[1] in NumpyBackend.optimizers], ids=lambda s: s.name)
def test_a_trainer_that_ignores_a_setting_fails_its_settings_case(setting: checks_settings.Setting) -> None:
    name = f"setting changes the result[{setting.name}]"
    case = next(case for case in checks_settings.CASES if case.name == name)
    failures = _failures(broken.backend_for(broken.ignoring(setting.field, setting.values[0])), [case])
    assert set(failures) == {name}
    assert failures[name].startswith(f"{setting.field}={setting.values[0]} and {setting.values[1]} give ")
    assert failures[name].endswith(setting.why)


@pytest.mark.parametrize(("variant", "fails"), [
    ("members train the first member's config", {"group[members equal their single runs]",
                                                 "group[members equal their single runs, vmap_batched]",
                                                 "group[a diverging member is its own]",
                                                 "group[state round trip, member by member]",
                                                 "group[driver rows equal single runs]"}),
    ("member k reads member k + 1's carried sums", {"group[carried sums are each member's own]"}),
    ("the group's first non-finite step for every member", {"group[a diverging member is its own]"}),
    ("load_state_dicts gives every member the first member's state", {"group[state round trip, member by member]"}),
])
def test_a_group_that_mixes_up_its_members_fails_the_group_case_about_it(variant: str, fails: set[str]) -> None:
    failures = _failures(broken.backend_for(group_class=broken.GROUP_VARIANTS[variant]), checks_group.CASES)
    assert set(failures) == fails, failures
    messages = " ".join(failures.values())
    assert re.search(r"member \d", messages), messages


def test_a_group_member_reading_another_members_carried_sums_is_named() -> None:
    failures = _failures(broken.backend_for(group_class=broken.NeighbourSumsGroup), checks_group.CASES)
    message = failures["group[carried sums are each member's own]"]
    assert re.fullmatch(r"member 0 carried count 1000, correct 100 and ends the epoch at 2200, \d+ .*member k must "
                        r"add to sums\[k\]", message), message


def test_the_group_cases_vary_every_per_member_field() -> None:
    from mlp_research.run.members import VMAP_FIELDS

    configs = checks_group.member_configs(kit_lib.Kit(NumpyBackend()))
    for field in VMAP_FIELDS:
        assert len({c.as_dict()[field] for c in configs}) > 1, field


@pytest.mark.parametrize("case", kit_lib.pytest_cases())
def test_the_jax_core_passes_the_kit(case: kit_lib.Case, jax_kit: kit_lib.Kit) -> None:
    kit_lib.assert_case(case, jax_kit, allowed_skips=JAX_SKIPS)


def test_assert_case_refuses_an_allowed_skip_that_names_no_case(numpy_kit: kit_lib.Kit) -> None:
    with pytest.raises(AssertionError, match=r"or known_failures name no kit case: \['init\[mlp,defualt\]'\]"):
        kit_lib.assert_case(kit_lib.all_cases()[0], numpy_kit, allowed_skips={"init[mlp,defualt]"})


def test_assert_case_fails_a_skip_that_is_not_allowed(numpy_kit: kit_lib.Kit) -> None:
    case = next(c for c in kit_lib.all_cases() if c.name == "init[mlp,default]")
    with pytest.raises(AssertionError, match="init\\[mlp,default\\]: skip -- the concise model's default is"):
        kit_lib.assert_case(case, numpy_kit, allowed_skips=set())


def test_assert_case_holds_known_failures_to_failing() -> None:
    """A known failure is an expected failure while it fails, and an error once it passes (so it is removed)."""
    name = "non-finite loss step counts updates"
    case = next(c for c in kit_lib.all_cases() if c.name == name)
    for trainer, outcome in ((broken.EpochStepDivergenceTrainer, pytest.xfail.Exception), (None, AssertionError)):
        kit = kit_lib.Kit(broken.backend_for(trainer) if trainer else NumpyBackend())
        try:
            with pytest.raises(outcome, match="epoch \\* steps_per_epoch|passed; remove it from known_failures"):
                kit_lib.assert_case(case, kit, allowed_skips=set(), known_failures={name: "epoch * steps_per_epoch"})
        finally:
            kit.close()


def test_the_example_backend_ships_in_the_wheel(tmp_path: Path) -> None:
    """`pip install mlp-research` has the example the guide points to (built from a copy: no build/ in the repo)."""
    import shutil

    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    for package in ("mlp_research", "experiments"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist")], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    names = zipfile.ZipFile(next((tmp_path / "dist").glob("*.whl"))).namelist()
    assert {"mlp_research/testing/example_backend.py", "mlp_research/testing/kit.py"} <= set(names)


def _check_backend(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlp_research.testing.check_backend", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def test_the_command_line_prints_a_line_per_check_and_a_summary() -> None:
    done = _check_backend("jax", "--only=logits,training[mlp,sgd]")
    assert done.returncode == 0, done.stdout + done.stderr
    *lines, summary = done.stdout.strip().splitlines()
    want = [case.name for case in kit_lib.all_cases() if case.name.startswith(("logits", "training[mlp,sgd]"))]
    assert len(want) == 21 and "training[mlp,sgd]" in want
    parsed = [re.fullmatch(r"(PASS|FAIL|SKIP)  (.+?)  \((.+)\)", line) for line in lines]
    assert all(parsed), lines
    assert [m.group(2) for m in parsed] == want and {m.group(1) for m in parsed} == {"PASS"}
    assert re.fullmatch(r"jax: 21 passed, 0 failed, 0 skipped of 21 checks in \d+ s", summary), summary


def test_the_command_line_checks_a_backend_given_as_module_and_class() -> None:
    done = _check_backend("mlp_research.testing.example_backend:NumpyBackend", "--only=group,setting changes")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    total = len(checks_group.CASES) + len(checks_settings.CASES)
    skips = len(UNDECLARED)
    assert re.fullmatch(rf"numpy: {total - skips} passed, 0 failed, {skips} skipped of {total} checks in \d+ s",
                        summary), summary


def test_the_command_line_refuses_an_unknown_backend_with_one_line() -> None:
    for name, start in (("no_such_backend", "error: --backend: unknown backend 'no_such_backend'; installed: "),
                        ("no_such_module:Backend", "error: --backend: cannot load 'no_such_module:Backend': "
                                                   "ModuleNotFoundError")):
        done = _check_backend(name)
        assert done.returncode == 2 and done.stdout == ""
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stderr.startswith(start), done.stderr
