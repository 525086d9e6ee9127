"""Backend discovery through the entry-point group `mlp_research.backends`.

Listing is lazy: it reads package metadata and imports no framework. A backend
whose plugin fails to import is reported (package, error) when it is listed or
selected, and the others keep working: whatever a plugin raises, even
`sys.exit` at import, becomes that report (only Ctrl-C goes through).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
from typing import Any, Callable

from mlp_research.backends.adapter import as_backend
from mlp_research.backends.base import Backend
from mlp_research.config import Config
from mlp_research.errors import ConfigError, warn

GROUP = "mlp_research.backends"
# Duplicate registrations already warned about: a listing reads the metadata once per backend, a process
# may list many times, and one warning says it all.
_warned: set[tuple[str, str, str]] = set()


@dataclasses.dataclass(frozen=True)
class BackendInfo:
    name: str
    target: str  # "module:Class"
    distribution: str  # the package that registered it
    distribution_version: str


# The backend this distribution ships (the one the kit checks every other against), as registered in
# pyproject.toml; listed even from a source checkout that was never pip-installed.
CORE = BackendInfo("jax", "mlp_research.jax_backend.backend:JaxBackend", "mlp-research", "source")


def available() -> dict[str, BackendInfo]:
    """Registered backends by name, from installed packages' metadata (no imports)."""
    found: dict[str, BackendInfo] = {}
    for ep in md.entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        info = BackendInfo(ep.name, ep.value, dist.name if dist else "?", dist.version if dist else "?")
        first = found.get(ep.name)
        if first is None:
            found[ep.name] = info
        elif first.target != info.target:
            _warn_duplicate(first, info)
    found.setdefault(CORE.name, CORE)  # a source checkout that was never pip-installed still has its core
    return dict(sorted(found.items()))


def _warn_duplicate(first: BackendInfo, other: BackendInfo) -> None:
    key = (first.name, f"{first.distribution}:{first.target}", f"{other.distribution}:{other.target}")
    if key not in _warned:
        _warned.add(key)
        warn(f"backend {first.name!r} is registered twice, by package {first.distribution} {first.distribution_version}"
             f" ({first.target}) and by package {other.distribution} {other.distribution_version} ({other.target});"
             f" using {first.distribution}'s")


def _guarded(info: BackendInfo, call: Callable[[], Any]) -> Any:
    """`call()`; ConfigError naming the package for anything the plugin raises but Ctrl-C."""
    try:
        return call()
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 -- a broken plugin, even one calling sys.exit, must not stop the others
        detail = " ".join(str(e).split())
        what = f"{type(e).__name__}: {detail}" if detail else type(e).__name__
        raise ConfigError(f"--backend: backend {info.name!r} from package {info.distribution} failed to load: "
                          f"{what}") from None


def _instantiate(info: BackendInfo) -> Backend:
    module_name, _, attr = info.target.partition(":")
    return as_backend(_guarded(info, lambda: getattr(__import__(module_name, fromlist=[attr or "_"]), attr)()),
                      info.name)


def load(name: str) -> Backend:
    """The backend instance registered as `name`; ConfigError naming the plugin if it cannot load."""
    backends = available()
    if name not in backends:
        raise ConfigError(f"--backend: unknown backend {name!r}; installed: {', '.join(backends)}")
    return _instantiate(backends[name])


def prepared(config: Config, backend: Any = None) -> Backend:
    """`backend` (adapted where it does not subclass `Backend`), or else the one `config` names, loaded; prepared
    for `config` (`Backend.prepare`: before its framework starts). How every run gets its backend."""
    backend = as_backend(backend) if backend is not None else load(config.backend)
    backend.prepare(config)
    return backend


def status() -> list[dict]:
    """Each backend with its package, framework version and whether it loads."""
    rows = []
    for name, info in available().items():
        row = {"backend": name, "package": info.distribution, "package_version": info.distribution_version,
               "entry_point": info.target}
        try:
            backend = _instantiate(info)
            row.update(loads=True, framework_version=str(_guarded(info, backend.version)), error="")
        except ConfigError as e:
            row.update(loads=False, framework_version="", error=str(e))
        rows.append(row)
    return rows
