"""The backend conformance kit: the contract of `mlp_research.backends.base`, checked against the reference.

A check is a `Case` with a name such as `logits[mlp,gelu,2 layers]`; running it
gives an `Outcome`: passed, failed or skipped, with the figure it measured and,
for a failure, what is wrong. `python -m mlp_research.testing.check_backend NAME`
prints one line per case; `pytest_cases()` gives the same cases as a pytest
parametrisation, which the shipped plugins' tests use with `assert_case`.

Cases that need a feature the backend declares it does not have (an optimiser
outside `backend.optimizers`, `--vmap` without `group_trainer`) are skipped,
not failed: a backend is judged on what it claims.

This module assembles the case list from the `checks_*` modules; `Case`,
`Outcome` and `Kit` live in `core` (imported here for the plugins' tests).
"""

from __future__ import annotations

import functools
from typing import Any, Collection, Mapping

from mlp_research.testing import checks_extra, checks_group, checks_model, checks_run, checks_settings, checks_training
from mlp_research.testing.core import Case, Kit, Outcome, failed, random_canonical, train_epochs

__all__ = ["Case", "Kit", "Outcome", "all_cases", "assert_case", "case_names", "pytest_cases", "random_canonical",
           "run_case", "train_epochs"]


@functools.cache
def all_cases() -> tuple[Case, ...]:
    """Every case, cheap ones first and the driver runs last."""
    return (*checks_run.CASES_FIRST, *checks_model.CASES, *checks_training.CASES, *checks_extra.CASES,
            *checks_settings.CASES, *checks_group.CASES, *checks_run.CASES_LAST)


def case_names(prefix: str) -> set[str]:
    """The names of the cases starting with `prefix`, e.g. `case_names("group[")` for `allowed_skips`."""
    return {case.name for case in all_cases() if case.name.startswith(prefix)}


def run_case(case: Case, kit: Kit) -> Outcome:
    """Run one case; an exception is a failure naming it (a kit must not stop at the first broken call)."""
    try:
        return case.run(kit)
    except Exception as e:  # noqa: BLE001 -- any exception of the backend is a finding
        message = " ".join(str(e).split())[:300]
        return failed(f"raised {type(e).__name__}: {message}")


def pytest_cases() -> list[Any]:
    """The cases as `pytest.param`s, ids = case names: `@pytest.mark.parametrize("case", kit.pytest_cases())`."""
    import pytest

    return [pytest.param(case, id=case.name) for case in all_cases()]


def assert_case(case: Case, kit: Kit, allowed_skips: Collection[str],
                known_failures: Mapping[str, str] | None = None) -> None:
    """For pytest: pass a passed case, skip a skipped one that `allowed_skips` names, fail anything else.

    `allowed_skips` is required: a skip nobody expected (a declaration that
    drifted, a capability lost) fails, so a suite cannot pass on checks that
    never ran. Name every skip your declarations imply; `case_names(prefix)`
    lists families such as `group[` for a backend without `group_trainer`.
    `known_failures` maps a case to why it fails today: it must fail (an
    expected failure), and passing makes the test fail until it is removed.
    """
    import pytest

    known = dict(known_failures or {})
    unknown = (set(allowed_skips) | set(known)) - {c.name for c in all_cases()}
    assert not unknown, f"allowed_skips or known_failures name no kit case: {sorted(unknown)}"
    outcome = run_case(case, kit)
    if case.name in known:
        assert outcome.status == "fail", f"{case.name}: {outcome.status}ed; remove it from known_failures"
        pytest.xfail(f"{known[case.name]} -- {outcome.detail}")
    if outcome.status == "skip" and case.name in allowed_skips:
        pytest.skip(outcome.detail)
    assert outcome.status == "pass", f"{case.name}: {outcome.status} -- {outcome.detail} ({outcome.figure})"
