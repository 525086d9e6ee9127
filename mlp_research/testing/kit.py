"""The backend conformance kit: the contract of `mlp_research.backends.base`, checked against the reference.

A check is a `Case` with a name such as `logits[mlp,gelu,2 layers]`; running it
gives an `Outcome`: passed, failed or skipped, with the figure it measured and,
for a failure, what is wrong. `python -m mlp_research.testing.check_backend NAME`
prints one line per case; `pytest_cases(backend)` gives the same cases as a
pytest parametrisation, which the shipped plugins' tests use.

Cases that need a feature the backend declares it does not have (an optimiser
outside `backend.optimizers`, `--vmap` without `group_trainer`) are skipped,
not failed: a backend is judged on what it claims.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
from typing import Any, Callable, Collection, Iterator

import numpy as np

from mlp_research.backends import registry
from mlp_research.backends.base import check_config
from mlp_research.config import Config
from mlp_research.data import Splits, load_splits
from mlp_research.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Outcome:
    status: str  # "pass", "fail" or "skip"
    figure: str = ""  # what was measured, e.g. "max |logit diff| 2.1e-06"
    detail: str = ""  # for a failure or a skip: what is wrong, or why it does not apply


def passed(figure: str = "") -> Outcome:
    return Outcome("pass", figure)


def failed(detail: str, figure: str = "") -> Outcome:
    return Outcome("fail", figure, detail)


def skipped(reason: str) -> Outcome:
    return Outcome("skip", "", reason)


def expect(ok: bool, figure: str, detail: str) -> Outcome:
    return passed(figure) if ok else failed(detail, figure)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    run: Callable[["Kit"], Outcome]


class Kit:
    """What every case needs: the backend, small fixed data, configs, and a scratch directory."""

    def __init__(self, backend: Any, workdir: str | None = None, data_dir: str = ""):
        self.backend = registry.load(backend) if isinstance(backend, str) else backend
        self.name = self.backend.name
        self.data_dir = data_dir
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix=f"kit-{self.name}-")
        self.workdir = workdir or self._tmp.name

    def config(self, **overrides: Any) -> Config:
        """A small synthetic run of this backend: 200 training examples (4 batches, the last short)."""
        values = dict(backend=self.name, dataset="synthetic", synthetic_train_size=200, synthetic_test_size=64,
                      batch_size=64, eval_batch_size=64, max_epochs=2, progress=False, checkpoint_min_seconds=0)
        values.update(overrides)
        return Config().replace(**values)

    def splits(self, config: Config) -> Splits:
        return load_splits(config)

    def trainer(self, config: Config) -> Any:
        """A trainer after the run's checks, as the driver builds it."""
        check_config(self.backend, config)
        return self.backend.trainer(config, self.splits(config))

    def supports(self, **flat: Any) -> str | None:
        """None if the backend accepts these settings, else why not (its ConfigError)."""
        try:
            check_config(self.backend, self.config(**flat))
        except ConfigError as e:
            return str(e)
        return None

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def random_canonical(config: Config, seed: int = 0) -> dict[str, np.ndarray]:
    """Parameters with non-zero biases, so parity checks see every term."""
    rng = np.random.default_rng(seed)
    return {name: (rng.standard_normal(shape) * (0.1 if name.startswith("W") else 0.05)).astype(np.float32)
            for name, shape in config.model.canonical_shapes().items()}


def max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)))) for k in a)


def run_case(case: Case, kit: Kit) -> Outcome:
    """Run one case; an exception is a failure naming it (a kit must not stop at the first broken call)."""
    try:
        return case.run(kit)
    except Exception as e:  # noqa: BLE001 -- any exception of the backend is a finding
        message = " ".join(str(e).split())[:300]
        return failed(f"raised {type(e).__name__}: {message}")


@functools.cache
def all_cases() -> tuple[Case, ...]:
    from mlp_research.testing import checks_extra, checks_model, checks_run, checks_training

    return (*checks_run.CASES_FIRST, *checks_model.CASES, *checks_training.CASES, *checks_extra.CASES,
            *checks_run.CASES_LAST)


def run_all(kit: Kit, selected: Callable[[Case], bool] = lambda case: True) -> Iterator[tuple[Case, Outcome]]:
    for case in all_cases():
        if selected(case):
            yield case, run_case(case, kit)


def pytest_cases() -> list[Any]:
    """The cases as `pytest.param`s, ids = case names: `@pytest.mark.parametrize("case", kit.pytest_cases())`."""
    import pytest

    return [pytest.param(case, id=case.name) for case in all_cases()]


def assert_case(case: Case, kit: Kit, allowed_skips: Collection[str] | None = None) -> None:
    """For pytest: skip a skipped case, fail a failed one with its line.

    `allowed_skips` names the cases a backend expects to skip; any other skip then
    fails, so a suite can require that a case really runs.
    """
    import pytest

    outcome = run_case(case, kit)
    if outcome.status == "skip" and (allowed_skips is None or case.name in allowed_skips):
        pytest.skip(outcome.detail)
    assert outcome.status == "pass", f"{case.name}: {outcome.status} -- {outcome.detail} ({outcome.figure})"
