"""Flag fuzzing over every config field, and the bad inputs an adversarial review found (issue 13, #6 and #8).

In-process: thousands of random values per run, each either accepted or
refused with one `ConfigError` line naming a flag. Through the command line:
each reported input exits 2 with one line, before any work directory exists.
"""

from __future__ import annotations

import math
import random
import subprocess
import sys

import pytest

from conftest import REPO
from mlp_research.config import Config, field_types
from mlp_research.errors import ConfigError

NASTY = ["", " ", "0", "-1", "1", "2.5", "-0.0", "1e309", "inf", "-inf", "nan", "NaN", "1e-9", "3.7",
         "18446744073709551616", "2147483648", "-2147483649", "true", "false", "yes", "None", "[]", "256,,128",
         "256,", ",", "a,b", "0x10", "1_000", "\u00e9", "a" * 300, "256.9", 256.9, -1, 0, 1, 10**30, math.inf,
         math.nan, True, False, None, [256, "x"], [3.7], [], (1, 2), {"a": 1}]


def test_every_field_accepts_or_refuses_with_one_line_naming_a_flag():
    rng = random.Random(0)
    fields = list(field_types())
    for _ in range(3000):
        values = {name: rng.choice(NASTY) for name in rng.sample(fields, rng.randint(1, 3))}
        try:
            config = Config.from_dict(values)
        except ConfigError as e:
            message = str(e)
            assert message.startswith("--") and "\n" not in message and len(message) < 2000, (values, message)
            continue
        # Accepted: every number is finite and the config is usable as is.
        for name, value in config.as_dict().items():
            if isinstance(value, float):
                assert math.isfinite(value), (values, name)


REFUSED = {
    "--config.bogus=1": "--config.bogus:",
    "--seed=-1": "--seed:",
    "--seed=18446744073709551616": "--seed:",
    "--warmup_epochs=inf": "--warmup_epochs:",
    "--lr=inf": "--lr:",
    "--sigma=inf": "--sigma:",
    "--weight_decay=inf": "--weight_decay:",
    "--num_hiddens=2147483648": "--num_hiddens:",
    "--num_hiddens=256,,128": "--num_hiddens:",
    "--synthetic_train_size=1000000000000": "--synthetic_train_size:",
    "--val_fraction=1e-9": "--val_fraction:",
    "--workdir=": "--workdir:",
    "--coordinator_address=garbage --num_processes=1 --process_id=0": "--coordinator_address:",
}


@pytest.mark.parametrize("flag", list(REFUSED))
def test_reported_bad_flags_exit_2_with_one_line_and_leave_nothing(tmp_path, flag):
    workdir = tmp_path / "w"
    args = [sys.executable, "-m", "experiments.train", "--dataset=synthetic"]
    args += flag.split() if flag.startswith("--workdir") else [*flag.split(), f"--workdir={workdir}"]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith(f"error: {REFUSED[flag]}"), lines[0]
    assert not workdir.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("widths", ['[256, "x"]', "3.7", "None", "256.9"])
def test_config_file_with_bad_widths_exits_2(tmp_path, widths):
    path = tmp_path / "exp.py"
    path.write_text("from ml_collections import ConfigDict\n"
                    f"def get_config():\n    return ConfigDict(dict(num_hiddens={widths}, dataset='synthetic'))\n")
    cmd = [sys.executable, "-m", "experiments.train", f"--config={path}", f"--workdir={tmp_path / 'w'}"]
    done = subprocess.run(cmd,
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: --num_hiddens:"), done.stderr
    assert not (tmp_path / "w").exists()


def test_widths_can_be_set_through_config_overrides(tmp_path):
    """`--config.num_hiddens=512,256` sets the widths like any other field."""
    done = subprocess.run([sys.executable, "-m", "experiments.train", "--config=experiments/configs/mlp_concise.py",
                           "--config.num_hiddens=64,32", "--dataset=synthetic", "--synthetic_train_size=256",
                           "--synthetic_test_size=64", "--batch_size=64", "--max_epochs=1", "--progress=false",
                           f"--workdir={tmp_path / 'w'}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"num_hiddens": [\n      64,\n      32\n    ]' in (tmp_path / "w" / "summary.json").read_text()
