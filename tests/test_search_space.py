"""Space files and the search command's refusals: every bad input is one line, its own exit code, nothing written."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
from postgres import free_port

from conftest import REPO
from mlp_research.errors import ConfigError
from mlp_research.search import space as space_lib
from mlp_research.search import storage

TINY = str(REPO / "tests" / "search_spaces" / "tiny.py")


def _check(**sections) -> space_lib.Space:
    raw = {"fixed": {"val_fraction": 0.1}, "params": {"lr": {"low": 0.01, "high": 0.5, "log": True}}}
    raw.update(sections)
    return space_lib.check_space(raw, "s.py")


@pytest.mark.parametrize("sections, message", [
    ({"params": {"lrr": {"low": 0.1, "high": 1.0}}}, "params.lrr: unknown config field 'lrr'"),
    ({"params": {"lr": {"low": 0.5, "high": 0.1}}}, "params.lr: empty range: low 0.5 must be below high 0.1"),
    ({"params": {"lr": {"low": 0.0, "high": 0.1, "log": True}}}, "params.lr: a logarithmic range must stay above 0"),
    ({"params": {"optimizer": {"choices": ["sgd", "adamm"]}}}, "params.optimizer: value 'adamm': --optimizer: unknown"),
    ({"params": {"max_epochs": {"low": 1.5, "high": 4}}}, "params.max_epochs: low and high must be integers"),
    ({"params": {"momentum": {"low": 0.5, "high": 0.9, "when": {"optimizer": ["momentum"]}}}},
     "params.momentum: when: 'optimizer' is not a categorical parameter declared before it"),
    ({"fixed": {"val_fraction": 0.1, "widht": 3}}, "fixed: --widht: unknown config field"),
    ({"fixed": {}}, "objective.metric val_acc with val_fraction 0 would choose on the test split"),
    ({"objective": {"metric": "accuracy"}}, "objective.metric: unknown metric 'accuracy'"),
    ({"sampler": {"name": "grid"}}, "sampler.name: must be one of tpe, random"),
    ({"budget": {"n_trials": 0}}, "budget.n_trials: must be an integer >= 1"),
    ({"budgets": {}}, "unknown section 'budgets'"),
])
def test_bad_spaces_are_refused_naming_what_is_wrong(sections, message):
    with pytest.raises(ConfigError) as caught:
        _check(**sections)
    assert message in str(caught.value) and str(caught.value).startswith("--space: s.py: ")


def test_conditional_parameters_are_sampled_only_under_their_condition_and_epochs_may_vary():
    space = _check(params={"optimizer": {"choices": ["sgd", "momentum"]}, "lr": {"low": 0.01, "high": 0.5, "log": True},
                           "momentum": {"low": 0.5, "high": 0.9, "when": {"optimizer": ["momentum"]}},
                           "num_hiddens": {"choices": ["16", "32,16"]}, "max_epochs": {"low": 2, "high": 8}})
    base = space.base()
    seen = set()
    for params in ({"optimizer": "sgd", "lr": 0.1, "num_hiddens": "32,16", "max_epochs": 2},
                   {"optimizer": "momentum", "lr": 0.1, "momentum": 0.7, "num_hiddens": "16", "max_epochs": 8}):
        sampled = space_lib.suggest(optuna.trial.FixedTrial(params), space)
        assert sampled == params
        config = space_lib.configure(space, base, sampled)
        seen.add((config.optimizer, config.momentum, config.num_hiddens, config.max_epochs))
    assert seen == {("sgd", 0.9, (32, 16), 2), ("momentum", 0.7, (16,), 8)}  # sgd keeps the default momentum
    assert space.varying_epochs and space.max_epochs() == 8
    from mlp_research.search import study

    assert [study.step_of(space, e, 4) for e in (1, 2, 4)] == [25, 50, 100]  # shares of each trial's schedule


def test_derive_turns_free_parameters_into_fields_and_is_part_of_the_study(tmp_path):
    path = tmp_path / "d.py"
    path.write_text("def get_space():\n    return dict(fixed=dict(val_fraction=0.1), params=dict(\n"
                    "        depth=dict(low=1, high=3, type='int'), width=dict(choices=[16, 32])))\n\n"
                    "def derive(p):\n    return dict(num_hiddens=[p['width']] * p['depth'])\n")
    space = space_lib.load_space(str(path))
    config = space_lib.configure(space, space.base(), {"depth": 3, "width": 16})
    assert config.num_hiddens == (16, 16, 16)
    name = space.study_name()
    path.write_text(path.read_text().replace("[p['width']] * p['depth']", "[p['width']] * (p['depth'] + 1)"))
    assert space_lib.load_space(str(path)).study_name() != name, "another derive() computes another study"
    assert space_lib.load_space(str(path), {"fixed": {"data_dir": "/x"}}).study_name() != name


def test_password_is_split_off_redacted_and_may_come_from_a_file_or_the_environment(tmp_path, monkeypatch):
    url = "postgresql://alice:s3cr%40t@db.example:5432/study"
    assert storage.split_password(url) == ("postgresql://alice@db.example:5432/study", "s3cr@t")
    assert "s3cr" not in storage.redact(url) and "***" in storage.redact(url)
    assert storage.dashboard_target(url) == "postgresql://alice@db.example:5432/study"
    (tmp_path / "pw").write_text("from-file\n")
    assert storage.split_password("postgresql://alice@h/db", str(tmp_path / "pw"))[1] == "from-file"
    monkeypatch.setenv(storage.PASSWORD_ENV, "from-env")
    assert storage.split_password("postgresql://alice@h/db")[1] == "from-env"
    assert storage.redact("journal:/shared/study.log") == "journal:/shared/study.log"
    argv = ["-m", "experiments.search", f"--storage={url}", "--storage", url, "--workers=2"]
    shown = " ".join(storage.redact_argv(argv, "s3cr@t"))
    assert "s3cr" not in shown and "--workers=2" in shown and shown.count("alice:***@db.example") == 2


def _search(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.search", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_bad_input_is_one_line_with_its_exit_code_and_nothing_written(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def get_space():\n    return dict(fixed=dict(val_fraction=0.1), params=dict(lrr=dict(low=0.1, "
                   "high=1.0)))\n")
    port = free_port()  # nothing listens there
    cases = [
        ([f"--space={bad}"], 2, "params.lrr: unknown config field"),
        ([f"--space={TINY}", "--workers=0"], 2, "--workers: must be >= 1"),
        ([f"--space={tmp_path / 'none.py'}"], 2, "no such file"),
        ([f"--space={TINY}", f"--storage=postgresql://u:hunter2secret@127.0.0.1:{port}/db"], 14,
         f"the study's storage postgresql://u@127.0.0.1:{port}/db cannot be reached"),
        ([f"--space={TINY}", "--storage=mysql+nosuchdriver://u@127.0.0.1/db"], 2, "--storage: no database driver"),
    ]
    for args, code, message in cases:
        done = _search(*args, f"--workdir={tmp_path / 'w'}")
        assert done.returncode == code, (args, done.stderr)
        assert done.stderr.strip().count("\n") == 0 and message in done.stderr, done.stderr
        assert "hunter2secret" not in done.stdout + done.stderr
        assert not (tmp_path / "w").exists(), args


def test_a_workdir_holds_one_study(tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "search.json").write_text('{"study_name": "other-1", "storage": "sqlite:///x.db"}')
    done = _search(f"--space={TINY}", f"--workdir={tmp_path / 'w'}")
    assert done.returncode == 7 and "holds another study" in done.stderr, done.stderr
