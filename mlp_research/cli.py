"""absl flag plumbing shared by the `experiments/` entry points.

Every config field becomes a flag of the same name (`--lr`, `--num_hiddens`,
...), defaulting to "not given". A run's config is built in this order, later
winning: the dataclass defaults, the experiment file (`--config=FILE.py`, with
`--config.lr=...` overrides from ml_collections), then explicitly given flags.
Bad flags exit with code 2 and one line naming the flag; `--help` lists every
flag a user sets, grouped, with its type, default and choices.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any, Callable, Mapping

from absl import app, flags
from absl import logging as absl_logging

from mlp_research import launchers
from mlp_research.config import GROUPS, Config, field_metadata, field_types
from mlp_research.errors import ConfigError, UserError
from mlp_research.run.workdir import check_workdir

TYPE_NAMES = {"str": "STR", "int": "INT", "float": "FLOAT", "bool": "BOOL", "widths": "INT[,INT...]"}


def define_config_flags(flag_values: flags.FlagValues = flags.FLAGS, config_file: str | None = None) -> None:
    """Define `--config` (defaulting to the entry point's `config_file`) and one flag per config field."""
    try:
        from ml_collections import config_flags
    except ImportError:  # a minimal environment (e.g. a GPU image installed with --no-deps): flags only
        flags.DEFINE_string("config", None, "Experiment file (needs ml_collections, which is not installed).",
                            flag_values=flag_values)
    else:
        try:  # ml_collections reads --config.FIELD overrides from sys.argv here, at definition
            config_flags.DEFINE_config_file(
                "config", config_file, "Experiment file whose get_config() returns the run's settings.",
                flag_values=flag_values, lock_config=False,
            )
        except (KeyError, AttributeError) as e:  # an override of a field the experiment file lacks
            field = str(e).strip("\"'")
            _exit_with(f"--config.{field}: unknown config field (known: {', '.join(sorted(field_types()))})")
        except Exception as e:  # noqa: BLE001 -- an unsupported override type, a broken experiment file, ...
            detail = _one_line(str(e)).strip("\"'") or type(e).__name__
            _exit_with(f"--config: {detail}")
    meta = field_metadata()
    for name, kind in field_types().items():
        info = meta[name]
        choices = f"; one of {', '.join(info['choices'])}" if info.get("choices") else ""
        help_text = f"{info.get('help', '')} [{info['group']}; default {_shown(info['default'])}{choices}]"
        if kind == "bool":
            flags.DEFINE_boolean(name, None, help_text, flag_values=flag_values)
        else:
            # Parsed and validated by Config, so a bad value gets our one-line error and exit code 2.
            flags.DEFINE_string(name, None, help_text, flag_values=flag_values)


def experiment_config(config: Config) -> Any:
    """An experiment file's `get_config()` value for `config`: widths as text, so `--config.num_hiddens=512,256`
    overrides them like any other field."""
    from ml_collections import ConfigDict

    flat = config.as_dict()
    flat["num_hiddens"] = ",".join(map(str, flat["num_hiddens"]))
    return ConfigDict(flat)


def define_launch_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """The flags of multi-process runs; the environment of a known launcher fills in any not given."""
    flags.DEFINE_enum("distributed", "auto", launchers.MODES, "auto: join the processes a cluster launcher (srun, "
                      "mpirun, a Kubernetes Indexed Job, a Cloud TPU pod) started; off: run alone whatever the "
                      "environment says.", flag_values=flag_values)
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (or $JAX_COORDINATOR_ADDRESS); "
                        "overrides the launcher's.", flag_values=flag_values)
    flags.DEFINE_integer("num_processes", None, "Processes in the run; overrides the launcher's.",
                         flag_values=flag_values)
    flags.DEFINE_integer("process_id", None, "This process's index, 0 writes the outputs; overrides the "
                         "launcher's.", flag_values=flag_values)


def launch_from_flags(flag_values: flags.FlagValues = flags.FLAGS,
                      environ: Mapping[str, str] = os.environ) -> launchers.Launch:
    """The validated launch for the parsed flags and this environment."""
    return launchers.resolve(flag_values["distributed"].value, flag_values["coordinator_address"].value,
                             flag_values["num_processes"].value, flag_values["process_id"].value, environ)


def _one_line(text: str) -> str:
    """A message's first and last non-blank lines, on one line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if len(lines) <= 1 else f"{lines[0]} {lines[-1]}"


def _exit_with(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(ConfigError.exit_code)


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return repr(value) if value == "" else str(value)


def config_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> Config:
    """Merge the experiment file, its overrides and explicit flags into a validated Config."""
    values: dict[str, Any] = {}
    if isinstance(flag_values["config"].value, str):  # the fallback flag: ml_collections is missing
        raise ConfigError("--config: experiment files need ml_collections (pip install ml_collections); "
                          "give the settings as flags instead")
    try:
        loaded = flag_values["config"].value
        if loaded is not None:
            values.update(loaded.to_dict() if hasattr(loaded, "to_dict") else loaded)
    except Exception as e:  # a missing file, a syntax error, get_config() raising...
        first = next((line.strip() for line in reversed(str(e).splitlines()) if line.strip()), type(e).__name__)
        raise ConfigError(f"--config: cannot load {flag_values['config'].config_filename}: {first}") from None
    for name in field_types():
        if flag_values[name].present:
            values[name] = flag_values[name].value
    return Config.from_dict(values)


def help_text(main_module: Any) -> str:
    """The entry point's docstring, every config flag by group (type, default, choices), then its own flags."""
    meta, kinds = field_metadata(), field_types()
    lines = [(main_module.__doc__ or "").strip()]
    configurable = "lr" in flags.FLAGS
    if configurable:
        lines += ["", "Settings resolve in this order, later winning: the defaults below, --config=FILE, "
                  "--config.FIELD=VALUE, then --FIELD=VALUE."]
    for group in GROUPS if configurable else ():
        lines += ["", f"{group}:"]
        for name, info in meta.items():
            if info["group"] != group:
                continue
            choices = f" (one of: {', '.join(info['choices'])})" if info.get("choices") else ""
            lines.append(f"  --{name}={TYPE_NAMES[kinds[name]]}  default {_shown(info['default'])}{choices}")
            lines.append(f"      {info.get('help', '')}")
    own = [f for f in flags.FLAGS.get_key_flags_for_module(main_module) if not (configurable and f.name in meta)]
    if configurable:
        own.insert(0, flags.FLAGS["config"])
    if own:
        spec = getattr(main_module, "__spec__", None)
        lines += ["", f"{getattr(spec, 'name', main_module.__name__)}:"]
        for flag in own:
            default = "" if flag.default is None or flag.default == [] else f"  default {_shown(flag.default)}"
            if flag.name == "config" and flag.config_filename:
                default = f"  default {os.path.relpath(flag.config_filename)}"
            lines.append(f"  --{flag.name}{default}")
            lines.append(f"      {flag.help}")
    lines += ["", "--helpfull lists absl's own flags too."]
    return "\n".join(lines) + "\n"


def workdir_from_flag(workdir: str | None, config: Config) -> str:
    """--workdir, checked; without it `runs/<model>-<time>` (an explicit empty --workdir= is refused, not replaced)."""
    if workdir is None:
        workdir = os.path.join("runs", f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    check_workdir(workdir)
    return workdir


def done_line(summary: dict[str, Any], workdir: str, name: str = "") -> str:
    """The line a finished run prints: its final metrics, total time and where it wrote them."""
    final = summary["final"]
    member = f" [{name}]" if name else ""
    state = "  diverged" if summary["diverged"] else ""
    return (f"done{member}: val_acc {final['val_acc']:.4f}  val_loss {final['val_loss']:.4f}  "
            f"train_loss {final['train_loss']:.4f}  total {summary['total_seconds']:.1f} s{state}  -> {workdir}")


def parse_flags_or_exit(argv: list[str]) -> list[str]:
    """absl's parser, but a bad flag prints one line and exits with code 2."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        message = str(e)
    except Exception as e:  # noqa: BLE001 -- ml_collections runs the --config file while parsing
        message = f"--config: cannot load it: {type(e).__name__}: {e}"
    _exit_with(_one_line(message))


def run(main: Callable[[list[str]], Any], positional: bool = False) -> None:
    """`app.run(main)` with `--help` grouped, `UserError` as one line and its exit code, and a quick exit.

    When `main` is done the process leaves at once (`exit_now`): every output is
    written and closed by then, and the interpreter's teardown (seconds with JAX
    and TensorFlow loaded) would be a window in which a signal kills the process
    with its default action.
    """
    if any(arg in ("--help", "-h", "-?", "--helpshort") for arg in sys.argv[1:]):
        sys.stdout.write(help_text(sys.modules["__main__"]))
        sys.exit(0)

    def wrapped(argv: list[str]) -> Any:
        if not flags.FLAGS["verbosity"].present:  # keep the terminal to our progress lines
            absl_logging.set_verbosity(absl_logging.WARNING)
        code = 0
        try:
            if len(argv) > 1 and not positional:  # absl leaves non-flag words here
                raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])}")
            main(argv)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            code = e.exit_code
        exit_now(code)

    app.run(wrapped, flags_parser=parse_flags_or_exit)


def exit_now(code: int) -> None:
    """Flush, run the exit hooks (e.g. the multi-process shutdown barrier), and leave without the teardown."""
    import atexit

    def flush() -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()

    flush()
    atexit._run_exitfuncs()
    flush()
    os._exit(code)
