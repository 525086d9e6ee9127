"""absl flag plumbing shared by the `experiments/` entry points.

Every config field becomes a flag of the same name (`--lr`, `--num_hiddens`,
...), defaulting to "not given". A run's config is built in this order, later
winning: the dataclass defaults, the experiment file (`--config=FILE.py`, with
`--config.lr=...` overrides from ml_collections), then explicitly given flags.
Bad flags exit with code 2 and one line naming the flag.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

from absl import app, flags
from absl import logging as absl_logging

from mlp_research.config import Config, field_types, flag_help
from mlp_research.errors import ConfigError, UserError

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "configs", "default.py")


def define_config_flags(flag_values: flags.FlagValues = flags.FLAGS, config_file: str | None = DEFAULT_CONFIG) -> None:
    """Define `--config` and one flag per config field."""
    try:
        from ml_collections import config_flags
    except ImportError:  # a minimal environment (e.g. a GPU image installed with --no-deps): flags only
        flags.DEFINE_string("config", None, "Experiment file (needs ml_collections, which is not installed).",
                            flag_values=flag_values)
    else:
        config_flags.DEFINE_config_file(
            "config", config_file, "Experiment file whose get_config() returns the run's settings.",
            flag_values=flag_values, lock_config=False,
        )
    helps = flag_help()
    for name, kind in field_types().items():
        help_text = helps.get(name, "") + " (default: from --config)"
        if kind == "bool":
            flags.DEFINE_boolean(name, None, help_text, flag_values=flag_values)
        else:
            # Parsed and validated by Config, so a bad value gets our one-line error and exit code 2.
            flags.DEFINE_string(name, None, help_text, flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> Config:
    """Merge the experiment file, its overrides and explicit flags into a validated Config."""
    values: dict[str, Any] = {}
    if isinstance(flag_values["config"].value, str):  # the fallback flag: ml_collections is missing
        raise ConfigError("--config: experiment files need ml_collections (pip install ml_collections); "
                          "give the settings as flags instead")
    try:
        loaded = flag_values["config"].value
        if loaded is not None:
            values.update(_plain(loaded))
    except Exception as e:  # a missing file, a syntax error, get_config() raising...
        first = next((line.strip() for line in reversed(str(e).splitlines()) if line.strip()), type(e).__name__)
        raise ConfigError(f"--config: cannot load {flag_values['config'].config_filename}: {first}") from None
    for name in field_types():
        if flag_values[name].present:
            values[name] = flag_values[name].value
    return Config.from_flat(values)


def _plain(config_dict: Any) -> dict[str, Any]:
    if hasattr(config_dict, "to_dict"):
        return dict(config_dict.to_dict())
    return dict(config_dict)


def parse_flags_or_exit(argv: list[str]) -> list[str]:
    """absl's parser, but a bad flag prints one line and exits with code 2."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        message = str(e)
    except Exception as e:  # noqa: BLE001 -- ml_collections runs the --config file while parsing
        message = f"--config: cannot load it: {type(e).__name__}: {e}"
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    one_line = lines[0] if len(lines) <= 1 else f"{lines[0]} {lines[-1]}"
    print(f"error: {one_line}", file=sys.stderr)
    sys.exit(ConfigError.exit_code)


def run(main: Callable[[list[str]], Any]) -> None:
    """`app.run(main)` with `UserError` turned into a one-line message and its exit code."""

    def wrapped(argv: list[str]) -> Any:
        if not flags.FLAGS["verbosity"].present:  # keep the terminal to our progress lines
            absl_logging.set_verbosity(absl_logging.WARNING)
        try:
            if len(argv) > 1:  # absl leaves non-flag words here; no entry point takes any
                raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])}")
            return main(argv)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(e.exit_code)

    app.run(wrapped, flags_parser=parse_flags_or_exit)
