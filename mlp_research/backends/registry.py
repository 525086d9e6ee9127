"""Backend discovery through the entry-point group `mlp_research.backends`.

Listing is lazy: it reads package metadata and imports no framework. A backend
whose plugin fails to import is reported (package, error) when it is listed or
selected, and the others keep working.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import logging

from mlp_research.errors import ConfigError

GROUP = "mlp_research.backends"
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BackendInfo:
    name: str
    target: str  # "module:Class"
    distribution: str  # the package that registered it
    distribution_version: str


def available() -> dict[str, BackendInfo]:
    """Registered backends by name, from installed packages' metadata (no imports)."""
    found: dict[str, BackendInfo] = {}
    for ep in md.entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        info = BackendInfo(ep.name, ep.value, dist.name if dist else "?", dist.version if dist else "?")
        if ep.name in found and found[ep.name].target != ep.value:
            log.warning("backend %r is registered twice (%s and %s); using the first",
                        ep.name, found[ep.name].distribution, info.distribution)
            continue
        found[ep.name] = info
    if "jax" not in found:  # a source checkout that was never pip-installed still has its core backend
        found["jax"] = BackendInfo("jax", "mlp_research.jax_backend.backend:JaxBackend", "mlp-research", "source")
    return dict(sorted(found.items()))


def load(name: str):
    """The backend instance registered as `name`; ConfigError naming the plugin if it cannot load."""
    backends = available()
    if name not in backends:
        raise ConfigError(f"--backend: unknown backend {name!r}; installed: {', '.join(backends)}")
    info = backends[name]
    module_name, _, attr = info.target.partition(":")
    try:
        module = __import__(module_name, fromlist=[attr or "_"])
        backend_class = getattr(module, attr)
        return backend_class()
    except Exception as e:  # noqa: BLE001 -- a broken plugin must not take the others down
        message = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(
            f"--backend: backend {name!r} from package {info.distribution} failed to load: "
            f"{type(e).__name__}: {message}"
        ) from None


def status() -> list[dict]:
    """Each backend with its package, framework version and whether it loads."""
    rows = []
    for name, info in available().items():
        row = {"backend": name, "package": info.distribution, "package_version": info.distribution_version,
               "entry_point": info.target}
        try:
            backend = load(name)
            row.update(loads=True, framework_version=backend.version(), error="")
        except ConfigError as e:
            row.update(loads=False, framework_version="", error=str(e))
        rows.append(row)
    return rows
