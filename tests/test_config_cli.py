"""Config validation, the flat config view, and the command line's refusal of bad flags.

The command-line tests run `python -m experiments.train` in a subprocess with
`jax`, `flax` and TensorFlow shadowed by modules that raise on import: a bad flag
must be refused (exit 2, one line on stderr naming the flag) before any of them
is imported and before the work directory is created. In-process flag tests use
a fresh `absl.flags.FlagValues`, never the global `FLAGS`.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from absl import flags

from mlp_research import cli
from mlp_research.config import FASHION_MNIST_SIZES, Config
from mlp_research.errors import ConfigError
from mlp_research.spec import ModelSpec, parse_widths

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "experiments" / "configs"


# ------------------------------------------------------------------- Config


@pytest.mark.parametrize(
    "values, flag",
    [
        ({"num_hiddens": 0}, "num_hiddens"),
        ({"num_hiddens": "0"}, "num_hiddens"),
        ({"num_hiddens": "256,0"}, "num_hiddens"),
        ({"num_hiddens": "a,b"}, "num_hiddens"),
        ({"num_hiddens": ""}, "num_hiddens"),
        ({"model": "foo"}, "model"),
        ({"activation": "swish2"}, "activation"),
        ({"init": "orthogonal"}, "init"),
        ({"optimizer": "x"}, "optimizer"),
        ({"schedule": "step"}, "schedule"),
        ({"dataset": "mnist"}, "dataset"),
        ({"data_source": "web"}, "data_source"),
        ({"matmul_precision": "fp8"}, "matmul_precision"),
        ({"lr": 0}, "lr"),
        ({"lr": -1}, "lr"),
        ({"lr": "abc"}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"max_epochs": 0}, "max_epochs"),
        ({"max_epochs": -3}, "max_epochs"),
        ({"max_epochs": "1.5"}, "max_epochs"),
        ({"max_epochs": 2.5}, "max_epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": FASHION_MNIST_SIZES["train"] + 1}, "batch_size"),
        ({"batch_size": 55_000, "val_fraction": 0.1}, "batch_size"),  # 54,000 left for training
        ({"dataset": "synthetic", "synthetic_train_size": 100, "batch_size": 101}, "batch_size"),
        ({"dataset": "synthetic", "synthetic_train_size": 100, "val_fraction": 0.5, "batch_size": 51}, "batch_size"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"val_fraction": 1.5}, "val_fraction"),
        ({"progress": "maybe"}, "progress"),
        ({"bogus": 1}, "bogus"),
        ({"lr": 0.1, "zzz_unknown": 1}, "zzz_unknown"),
    ],
)
def test_invalid_values_raise_config_error_naming_the_flag(values, flag):
    with pytest.raises(ConfigError) as info:
        Config.from_dict(values)
    message = str(info.value)
    assert message.startswith(f"--{flag}:"), message
    assert "\n" not in message
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"lr": 0.0}, "lr"),
        ({"max_epochs": 0}, "max_epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 60_001}, "batch_size"),
        ({"optimizer": "x"}, "optimizer"),
        ({"schedule": "x"}, "schedule"),
        ({"dataset": "x"}, "dataset"),
        ({"val_fraction": 1.0}, "val_fraction"),
    ],
)
def test_direct_construction_validates_too(kwargs, flag):
    with pytest.raises(ConfigError, match=f"^--{flag}:"):
        Config(**kwargs)


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"num_hiddens": (0,)}, "num_hiddens"),
        ({"model": "foo"}, "model"),
        ({"activation": "x"}, "activation"),
        ({"init": "x"}, "init"),
        ({"sigma": 0.0}, "sigma"),
    ],
)
def test_model_spec_validation_names_the_flag(kwargs, flag):
    with pytest.raises(ConfigError, match=f"^--{flag}:"):
        ModelSpec(**kwargs)


@pytest.mark.parametrize(
    "values",
    [
        {"batch_size": 60_000},
        {"batch_size": 54_000, "val_fraction": 0.1},
        {"val_fraction": 0.0},
        {"val_fraction": 0.99},
        {"lr": "0.5", "max_epochs": "3", "batch_size": 2.0, "progress": "false"},
        {"dataset": "synthetic", "synthetic_train_size": 100, "batch_size": 100},
    ],
)
def test_boundary_values_are_accepted(values):
    config = Config.from_dict(values)
    assert config.num_train_examples() >= config.batch_size


def test_from_flat_coerces_string_values():
    config = Config.from_dict({"lr": "0.5", "max_epochs": "3", "num_hiddens": "512,256", "progress": "false"})
    assert config.lr == 0.5 and isinstance(config.lr, float)
    assert config.max_epochs == 3 and isinstance(config.max_epochs, int)
    assert config.num_hiddens == (512, 256)
    assert config.progress is False


def test_parse_widths():
    assert parse_widths("512,256") == (512, 256)
    assert parse_widths("256") == (256,)
    assert parse_widths(" 512 , 256 ") == (512, 256)
    assert parse_widths("(512, 256)") == (512, 256)
    assert parse_widths(128) == (128,)
    assert parse_widths([64, 32, 16]) == (64, 32, 16)
    with pytest.raises(ConfigError, match="^--num_hiddens:"):
        parse_widths("a,b")
    with pytest.raises(ConfigError, match="^--num_hiddens:"):
        parse_widths("")


@pytest.mark.parametrize(
    "config",
    [
        Config(),
        Config(model="mlp", num_hiddens=(512, 256), activation="gelu", init="he", sigma=0.2),
        Config(optimizer="adamw", lr=3e-4, weight_decay=0.01, schedule="warmup_cosine", warmup_epochs=1.5,
               max_epochs=3, batch_size=128, seed=7, val_fraction=0.1, test_at_end=True, progress=False),
        Config(dataset="synthetic", synthetic_train_size=512, synthetic_test_size=64, batch_size=32),
    ],
)
def test_flat_round_trip(config):
    flat = config.as_dict()
    assert "model" in flat and "lr" in flat and "num_hiddens" in flat
    assert isinstance(flat["num_hiddens"], list)
    for name, value in flat.items():
        assert not dataclasses.is_dataclass(value), name  # flat means flat
    assert Config.from_dict(flat) == config
    assert Config.from_dict(flat).as_dict() == flat


def test_replace_changes_only_the_named_fields_and_validates():
    config = Config()
    changed = config.replace(lr=0.5, num_hiddens="64,32", model="mlp")
    assert changed.lr == 0.5
    assert changed.spec == ModelSpec(model="mlp", num_hiddens=(64, 32))
    assert {k: v for k, v in changed.as_dict().items() if k not in ("lr", "num_hiddens", "model")} == {
        k: v for k, v in config.as_dict().items() if k not in ("lr", "num_hiddens", "model")
    }
    with pytest.raises(ConfigError, match="^--lr:"):
        config.replace(lr=0)


# ------------------------------------------------- flags, in process (fresh FlagValues)


def parse(argv: list[str], monkeypatch) -> Config:
    """Parse `argv` with a fresh FlagValues, as experiments/train.py does with the global one."""
    argv = ["train", *argv]
    # ml_collections finds `--config.x` overrides in sys.argv.
    monkeypatch.setattr(sys, "argv", argv)
    flag_values = flags.FlagValues()
    cli.define_config_flags(flag_values=flag_values)
    flag_values(argv)
    return cli.config_from_flags(flag_values)


def test_no_flags_give_the_default_config(monkeypatch):
    assert parse([], monkeypatch) == Config()


def test_explicit_flags_are_parsed_and_validated(monkeypatch):
    config = parse(["--lr=0.5", "--num_hiddens=512,256", "--model=mlp", "--noprogress", "--batch_size=64"], monkeypatch)
    assert config.lr == 0.5
    assert config.num_hiddens == (512, 256)
    assert config.model == "mlp"
    assert config.progress is False
    assert config.batch_size == 64
    with pytest.raises(ConfigError, match="^--lr:"):
        parse(["--lr=-1"], monkeypatch)


def test_precedence_file_then_overrides_then_flags(monkeypatch):
    concise = str(CONFIGS / "mlp_concise.py")
    config = parse([f"--config={concise}"], monkeypatch)
    assert config.model == "mlp"
    config = parse([f"--config={concise}", "--config.lr=0.3", "--batch_size=128"], monkeypatch)
    assert (config.model, config.lr, config.batch_size) == ("mlp", 0.3, 128)
    config = parse([f"--config={concise}", "--config.lr=0.3", "--lr=0.2"], monkeypatch)
    assert config.lr == 0.2


def test_partial_config_file_keeps_other_defaults(monkeypatch, tmp_path):
    path = tmp_path / "partial.py"
    path.write_text(
        "from ml_collections import ConfigDict\n\n"
        "def get_config():\n    return ConfigDict({'lr': 0.5, 'num_hiddens': [64, 32]})\n"
    )
    config = parse([f"--config={path}"], monkeypatch)
    assert config == Config().replace(lr=0.5, num_hiddens=(64, 32))


# ------------------------------------------------------- the command line, in subprocesses

POISON = 'raise RuntimeError("{name} was imported before the flags were validated")\n'


@pytest.fixture(scope="module")
def no_heavy_imports(tmp_path_factory) -> dict[str, str]:
    """An environment in which importing jax, flax or TensorFlow fails loudly."""
    root = tmp_path_factory.mktemp("poison")
    for name in ("jax", "jaxlib", "flax", "optax", "orbax", "tensorflow", "tensorflow_datasets"):
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(POISON.format(name=name))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("MLP_RESEARCH_DATA_DIR", None)
    return env


def run_train(
    args: list[str], env: dict[str, str], cwd: Path = REPO
) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.train", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )
    return proc, time.monotonic() - start


def assert_refused(proc: subprocess.CompletedProcess, seconds: float, *names: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1, proc.stderr[-3000:]
    assert proc.stderr.strip() == lines[0].strip()
    for name in names:
        assert name in lines[0], (name, lines[0])
    assert proc.stdout == ""
    assert seconds < 10, seconds
    return lines[0]


BAD_FLAGS = [
    ("--num_hiddens=0", "--num_hiddens"),
    ("--num_hiddens=a,b", "--num_hiddens"),
    ("--model=foo", "--model"),
    ("--lr=abc", "--lr"),
    ("--lr=-1", "--lr"),
    ("--lr=0", "--lr"),
    ("--batch_size=70000", "--batch_size"),
    ("--optimizer=x", "--optimizer"),
    ("--max_epochs=0", "--max_epochs"),
    ("--activation=x", "--activation"),
    ("--init=x", "--init"),
    ("--schedule=x", "--schedule"),
    ("--val_fraction=1", "--val_fraction"),
    ("--progress=maybe", "progress"),
    ("--bogus=1", "bogus"),
    ("--config=/nonexistent.py", "--config"),
    ("--config.lr=0", "lr"),
    ("--config.lr=x", "lr"),
    ("--num_processes=2", "num_processes"),  # multi-process flags without --coordinator_address
]


@pytest.mark.parametrize("bad, name", BAD_FLAGS, ids=[b for b, _ in BAD_FLAGS])
def test_bad_flag_exits_2_with_one_line_before_importing_jax(bad, name, tmp_path, no_heavy_imports):
    workdir = tmp_path / "new"
    proc, seconds = run_train([bad, f"--workdir={workdir}"], no_heavy_imports)
    assert_refused(proc, seconds, name)
    assert not workdir.exists(), "a refused run must create nothing"
    assert list(tmp_path.iterdir()) == []


def test_workdir_pointing_at_a_file_is_refused(tmp_path, no_heavy_imports):
    path = tmp_path / "a_file"
    path.write_text("keep me")
    proc, seconds = run_train([f"--workdir={path}", "--max_epochs=1"], no_heavy_imports)
    line = assert_refused(proc, seconds, "--workdir", str(path))
    assert line.startswith("error: --workdir:")
    assert path.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_workdir_below_a_file_is_refused(tmp_path, no_heavy_imports):
    path = tmp_path / "a_file"
    path.write_text("")
    proc, seconds = run_train([f"--workdir={path / 'sub'}"], no_heavy_imports)
    assert_refused(proc, seconds, "--workdir")


def test_bad_flag_with_default_workdir_creates_no_runs_dir(tmp_path, no_heavy_imports):
    # Without --workdir the default is runs/<model>-<time> under the current
    # directory; run from an empty one (the repo is on PYTHONPATH) to see that
    # nothing is created there.
    proc, seconds = run_train(["--lr=-1"], no_heavy_imports, cwd=tmp_path)
    assert_refused(proc, seconds, "--lr")
    assert list(tmp_path.iterdir()) == []


def test_unexpected_positional_argument_is_refused(tmp_path, no_heavy_imports):
    workdir = tmp_path / "new"
    proc, seconds = run_train(["extra", f"--workdir={workdir}"], no_heavy_imports)
    assert_refused(proc, seconds, "extra")
    assert not workdir.exists()


BROKEN_CONFIGS = {
    "syntax": ("def get_config(:\n", "--config"),
    "raises": ("def get_config():\n    raise ValueError('boom')\n", "--config"),
    "import_error": ("import not_a_module_xyz\n\ndef get_config():\n    return {}\n", "--config"),
    "no_get_config": ("x = 1\n", "--config"),
    "unknown_field": (
        "from ml_collections import ConfigDict\n\ndef get_config():\n    return ConfigDict({'lr': 0.5, 'bogus': 1})\n",
        "--bogus",
    ),
    "bad_value": (
        "from ml_collections import ConfigDict\n\ndef get_config():\n    return ConfigDict({'lr': -0.5})\n",
        "--lr",
    ),
}


@pytest.mark.parametrize("name", list(BROKEN_CONFIGS))
def test_broken_config_file_is_refused(name, tmp_path, no_heavy_imports):
    source, expected = BROKEN_CONFIGS[name]
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    workdir = tmp_path / "new"
    proc, seconds = run_train([f"--config={path}", f"--workdir={workdir}"], no_heavy_imports)
    assert_refused(proc, seconds, expected)
    assert not workdir.exists()


def test_poisoned_environment_really_blocks_jax(no_heavy_imports):
    # The guard the tests above rely on: in this environment importing jax fails.
    proc = subprocess.run(
        [sys.executable, "-c", "import jax"], cwd=REPO, env=no_heavy_imports, capture_output=True, text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "was imported before the flags were validated" in proc.stderr
