"""A search space file: which settings of `experiments.train` a search varies, how, and what it optimises.

A space file is Python in the style of `experiments/configs/*.py`: its docstring
gives the command, `get_space()` returns a plain dict, and an optional
`derive(params) -> dict` turns sampled parameters that are not config fields
(an lr factor, a depth and a width) into fields. The dict:

    fixed     settings every trial shares (any `experiments.train` field)
    params    NAME -> {low, high[, log][, step]} | {choices} [, when={PARAM: [values]}]
              NAME is a config field (its type decides int or float) unless `derive` consumes it
              (then give type="int"|"float" for a range); `when` samples it only under those values
              of earlier categorical params (conditional)
    objective {metric: val_acc|val_loss|train_acc|train_loss, direction: maximize|minimize}
    budget    {n_trials}
    sampler   {name: tpe|random, seed, n_startup}
    pruner    {name: hyperband|none, min_epochs, reduction_factor}

Everything is checked before a search writes anything: an unknown field, an empty
or reversed range, a logarithmic range that reaches 0, a value its field refuses
or a condition on a parameter sampled later is one `ConfigError` naming it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
from typing import Any, Callable

from mlp_research.config import RESULT_NEUTRAL_FIELDS, Config, field_types
from mlp_research.errors import ConfigError

METRICS = {"val_acc": "maximize", "train_acc": "maximize", "val_loss": "minimize", "train_loss": "minimize"}
SAMPLERS = ("tpe", "random")
PRUNERS = ("hyperband", "none")
PARAM_KEYS = {"low", "high", "log", "step", "choices", "when", "type"}
SECTIONS = {"fixed", "params", "objective", "budget", "sampler", "pruner"}


@dataclasses.dataclass(frozen=True)
class Param:
    """One sampled parameter: a range (int or float, maybe logarithmic) or a list of choices."""

    name: str
    kind: str  # "float" | "int" | "categorical"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()
    when: tuple[tuple[str, tuple], ...] = ()  # (param, allowed values) pairs, all must hold
    field: str | None = None  # the config field it sets; None: only `derive` reads it

    def active(self, values: dict[str, Any]) -> bool:
        return all(values.get(name) in allowed for name, allowed in self.when)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass(frozen=True)
class Space:
    """A checked space file: fixed settings, parameters, objective, budget, sampler and pruner."""

    path: str
    fixed: dict
    params: tuple[Param, ...]
    metric: str = "val_acc"
    direction: str = "maximize"
    n_trials: int = 20
    sampler: str = "tpe"
    seed: int = 0
    n_startup: int = 8
    pruner: str = "hyperband"
    min_epochs: int = 1
    reduction_factor: int = 3
    derive: Callable[[dict], dict] | None = None

    @property
    def name(self) -> str:
        return os.path.splitext(os.path.basename(self.path))[0]

    @property
    def varying_epochs(self) -> bool:
        """Whether trials differ in length (`max_epochs` sampled): pruning then compares equal shares of a schedule."""
        return any(p.field == "max_epochs" for p in self.params)

    def max_epochs(self) -> int:
        """The longest schedule a trial can have."""
        for p in self.params:
            if p.field == "max_epochs":
                return int(max(p.choices) if p.choices else p.high)
        return int(self.base().max_epochs)

    def base(self, data_dir: str = "") -> Config:
        """The settings every trial starts from (`data_dir` given here wins over the file's)."""
        fixed = {**self.fixed, **({"data_dir": data_dir} if data_dir else {})}
        return Config().replace(progress=False, plot=False, keep_checkpoints=1, **fixed)

    def key(self) -> dict:
        """What decides the study: two runs with the same key join the same study (result-neutral fields left out)."""
        fixed = {k: v for k, v in sorted(self.fixed.items()) if k not in RESULT_NEUTRAL_FIELDS}
        return {"fixed": fixed, "params": [p.to_dict() for p in self.params], "metric": self.metric,
                "direction": self.direction, "sampler": self.sampler, "seed": self.seed, "n_startup": self.n_startup,
                "pruner": [self.pruner, self.min_epochs, self.reduction_factor],
                "derive": _source_digest(self.derive)}

    def study_name(self) -> str:
        digest = hashlib.sha1(json.dumps(self.key(), sort_keys=True, default=str).encode()).hexdigest()[:10]
        return f"{self.name}-{self.sampler}-{self.seed}-{digest}"

    def replace(self, **changes: Any) -> "Space":
        return dataclasses.replace(self, **changes)


def _source_digest(fn: Callable | None) -> str | None:
    """A change to `derive` changes what trials compute, so it changes the study."""
    if fn is None:
        return None
    import inspect

    return hashlib.sha1(inspect.getsource(fn).encode()).hexdigest()[:10]


def load_space(path: str, overrides: dict | None = None) -> Space:
    """Load and check a space file; `overrides` are merged into `get_space()`'s dict section by section."""
    where = f"--space: {path}"
    if not os.path.isfile(path):
        raise ConfigError(f"{where}: no such file")
    module_spec = importlib.util.spec_from_file_location(f"search_space_{os.path.basename(path)[:-3]}", path)
    if module_spec is None or module_spec.loader is None or not path.endswith(".py"):
        raise ConfigError(f"{where}: not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
        raw = module.get_space()
    except Exception as e:  # noqa: BLE001 -- a syntax error, a missing get_space(), an error inside it
        raise ConfigError(f"{where}: cannot load it: {type(e).__name__}: {' '.join(str(e).split())}") from None
    for section, values in (overrides or {}).items():
        raw[section] = {**raw.get(section, {}), **values}
    return check_space(raw, path, getattr(module, "derive", None))


def check_space(raw: Any, path: str, derive: Callable | None = None) -> Space:
    """The `Space` of a raw `get_space()` dict, or a `ConfigError` naming the first thing wrong."""
    where = f"--space: {path}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: get_space() must return a dict, got {type(raw).__name__}")
    unknown = sorted(set(raw) - SECTIONS)
    if unknown:
        raise ConfigError(f"{where}: unknown section {unknown[0]!r} (known: {', '.join(sorted(SECTIONS))})")
    fixed = dict(raw.get("fixed", {}))
    try:
        base = Config().replace(**fixed)
    except ConfigError as e:
        raise ConfigError(f"{where}: fixed: {e}") from None
    params: list[Param] = []
    for name, spec in dict(raw.get("params", {})).items():
        params.append(_check_param(name, spec, params, base, derive, f"{where}: params.{name}"))
    if not params:
        raise ConfigError(f"{where}: params: nothing to search")
    space = Space(path, fixed, tuple(params), derive=derive, **_settings(raw, where))
    _check_whole(space, base, where)
    return space


# (section, key, the Space field it fills, default, smallest value) of the integer settings.
INTEGER_SETTINGS = (("budget", "n_trials", "n_trials", 20, 1), ("sampler", "seed", "seed", 0, 0),
                    ("sampler", "n_startup", "n_startup", 8, 1), ("pruner", "min_epochs", "min_epochs", 1, 1),
                    ("pruner", "reduction_factor", "reduction_factor", 3, 2))


def _settings(raw: dict, where: str) -> dict:
    """The objective, budget, sampler and pruner sections as `Space` fields, each checked."""
    section = {name: dict(raw.get(name, {})) for name in ("objective", "budget", "sampler", "pruner")}
    metric = section["objective"].get("metric", "val_acc")
    if metric not in METRICS:
        raise ConfigError(f"{where}: objective.metric: unknown metric {metric!r} (one of {', '.join(METRICS)})")
    out = dict(metric=metric, direction=section["objective"].get("direction", METRICS[metric]),
               sampler=section["sampler"].get("name", "tpe"), pruner=section["pruner"].get("name", "hyperband"))
    for name, value, allowed in (("objective.direction", out["direction"], ("maximize", "minimize")),
                                 ("sampler.name", out["sampler"], SAMPLERS), ("pruner.name", out["pruner"], PRUNERS)):
        if value not in allowed:
            raise ConfigError(f"{where}: {name}: must be one of {', '.join(allowed)}, got {value!r}")
    for part, key, field, default, minimum in INTEGER_SETTINGS:
        value = section[part].get(key, default)
        if not _is_int(value, minimum):
            raise ConfigError(f"{where}: {part}.{key}: must be an integer >= {minimum}, got {value!r}")
        out[field] = value
    return out


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_param(name: str, spec: Any, earlier: list[Param], base: Config, derive: Callable | None,
                 where: str) -> Param:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a dict (low/high or choices), got {spec!r}")
    unknown = sorted(set(spec) - PARAM_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(PARAM_KEYS))})")
    kinds = field_types()
    field = name if name in kinds else None
    if field is None and derive is None:
        raise ConfigError(f"{where}: unknown config field {name!r} (a space file without derive() may sample only "
                          f"config fields: {', '.join(sorted(kinds))})")
    when = _check_when(spec.get("when", {}), earlier, where)
    if "choices" in spec:
        if {"low", "high", "log", "step"} & set(spec):
            raise ConfigError(f"{where}: give either choices or a low/high range, not both")
        choices = tuple(spec["choices"]) if isinstance(spec["choices"], (list, tuple)) else ()
        if not choices or len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"{where}: choices must be a non-empty list without repeats, got {spec['choices']!r}")
        if not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
            raise ConfigError(f"{where}: choices must be numbers, strings or booleans (widths as text: '512,256')")
        param = Param(name, "categorical", choices=choices, when=when, field=field)
    else:
        param = _check_range(name, spec, kinds.get(name), where, when, field)
    if field is not None:
        for value in param.choices or (param.low, param.high):
            try:
                base.replace(**{field: value})
            except ConfigError as e:
                raise ConfigError(f"{where}: value {value!r}: {e}") from None
    return param


def _check_when(when: Any, earlier: list[Param], where: str) -> tuple[tuple[str, tuple], ...]:
    if not isinstance(when, dict):
        raise ConfigError(f"{where}: when must be a dict PARAM: [values], got {when!r}")
    by_name = {p.name: p for p in earlier}
    out = []
    for other, values in when.items():
        if other not in by_name or by_name[other].kind != "categorical":
            raise ConfigError(f"{where}: when: {other!r} is not a categorical parameter declared before it")
        allowed = tuple(values) if isinstance(values, (list, tuple)) else (values,)
        stray = [v for v in allowed if v not in by_name[other].choices]
        if stray:
            raise ConfigError(f"{where}: when: {other}={stray[0]!r} is not one of its choices")
        out.append((other, allowed))
    return tuple(out)


def _check_range(name: str, spec: dict, field_kind: str | None, where: str, when: tuple,
                 field: str | None) -> Param:
    kind = spec.get("type", field_kind or "")
    if kind not in ("int", "float"):
        raise ConfigError(f"{where}: a low/high range needs a numeric parameter (give choices, or type='int'|'float')")
    if field_kind is not None and "type" in spec and spec["type"] != field_kind:
        raise ConfigError(f"{where}: type {spec['type']!r} differs from the field's type {field_kind!r}")
    low, high, step, log = spec.get("low"), spec.get("high"), spec.get("step"), bool(spec.get("log", False))
    numbers = (int,) if kind == "int" else (int, float)
    if not all(isinstance(v, numbers) and not isinstance(v, bool) for v in (low, high)):
        raise ConfigError(f"{where}: low and high must be {'integers' if kind == 'int' else 'numbers'}, "
                          f"got {low!r} and {high!r}")
    if not low < high:
        raise ConfigError(f"{where}: empty range: low {low!r} must be below high {high!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a logarithmic range must stay above 0, got low {low!r}")
    if step is not None and (log or not isinstance(step, numbers) or step <= 0):
        raise ConfigError(f"{where}: step must be a positive number and cannot go with log, got {step!r}")
    cast = int if kind == "int" else float
    return Param(name, kind, low=cast(low), high=cast(high), log=log, step=None if step is None else cast(step),
                 when=when, field=field)


def _check_whole(space: Space, base: Config, where: str) -> None:
    """Checks that need every parameter: derive's output, and an objective that must not see the test split."""
    probe = probe_params(space)
    try:
        config = configure(space, base, probe)
    except ConfigError as e:
        raise ConfigError(f"{where}: the trial {probe}: {e}") from None
    if space.derive is not None and "max_epochs" in (space.derive(dict(probe)) or {}):
        raise ConfigError(f"{where}: derive() sets max_epochs; sample it as a parameter so pruning sees it")
    if space.metric.startswith("val_") and config.val_fraction == 0 and not any(
            p.field == "val_fraction" for p in space.params):
        raise ConfigError(f"{where}: objective.metric {space.metric} with val_fraction 0 would choose on the test "
                          "split; set fixed val_fraction (e.g. 0.1)")


def probe_params(space: Space) -> dict[str, Any]:
    """One point of the space (first choice, low end), to check what `derive` makes of it."""
    values: dict[str, Any] = {}
    for p in space.params:
        if p.active(values):
            values[p.name] = p.choices[0] if p.choices else p.low
    return values


def configure(space: Space, base: Config, params: dict[str, Any]) -> Config:
    """The trial's config: `base`, then the sampled fields, then what `derive` makes of the parameters."""
    settings = {p.field: params[p.name] for p in space.params if p.field and p.name in params}
    if space.derive is not None:
        derived = space.derive(dict(params))
        if not isinstance(derived, dict):
            raise ConfigError(f"derive() must return a dict of config fields, got {type(derived).__name__}")
        settings.update(derived)
    return base.replace(**settings)


def suggest(trial: Any, space: Space) -> dict[str, Any]:
    """Sample the trial's parameters in declaration order, skipping those whose condition does not hold."""
    values: dict[str, Any] = {}
    for p in space.params:
        if not p.active(values):
            continue
        if p.kind == "categorical":
            values[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind == "int":
            values[p.name] = trial.suggest_int(p.name, p.low, p.high, step=p.step or 1, log=p.log)
        else:
            values[p.name] = trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
    return values
