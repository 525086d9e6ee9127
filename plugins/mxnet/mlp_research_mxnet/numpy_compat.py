"""Restore the numpy names that mxnet 1.9.1 reads at import time and numpy 2 removed.

mxnet 1.9.1 (the last release) binds e.g. `onp.PZERO`, `onp.alltrue` and the
financial functions at module level, so `import mxnet` fails under numpy 2.
`apply()` adds only the names numpy lacks, as their numpy-2 equivalents, and
never replaces an existing attribute; it is called just before `import mxnet`
and nowhere else, so jax and TensorFlow see numpy unchanged.
"""

from __future__ import annotations

import math
import types
from typing import Any, Callable

import numpy as np

_FINANCIAL = ("fv", "ipmt", "irr", "mirr", "nper", "npv", "pmt", "ppmt", "pv", "rate")


def _removed(name: str) -> Callable[..., Any]:
    """A function that says where a removed numpy function went: mxnet only re-exports these."""

    def removed(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"numpy.{name} was removed in numpy 2.0 (it lives in the numpy-financial package); "
            "mxnet re-exports it but mlp_research never calls it"
        )

    removed.__name__ = name
    return removed


def _in1d(ar1: Any, ar2: Any, assume_unique: bool = False, invert: bool = False) -> np.ndarray:
    """numpy<2 `in1d`: `isin` on the flattened first argument."""
    return np.isin(np.ravel(ar1), ar2, assume_unique=assume_unique, invert=invert)


def _msort(a: Any) -> np.ndarray:
    """numpy<2 `msort`: sort along the first axis."""
    return np.sort(a, axis=0)


def missing_names() -> dict[str, Any]:
    """Every name this layer can restore, with its numpy-2 equivalent (present or not)."""
    names: dict[str, Any] = {
        "PZERO": 0.0,
        "NZERO": -0.0,
        "PINF": math.inf,
        "NINF": -math.inf,
        "Inf": math.inf,
        "NaN": math.nan,
        "NAN": math.nan,
        "alltrue": np.all,
        "sometrue": np.any,
        "product": np.prod,
        "round_": np.round,
        "in1d": _in1d,
        "msort": _msort,
        "trapz": np.trapezoid,
        "compat": types.SimpleNamespace(basestring=str),
    }
    return names | {name: _removed(name) for name in _FINANCIAL}


def apply() -> list[str]:
    """Add the names numpy lacks (nothing existing is touched); returns the names added."""
    added = []
    for name, value in missing_names().items():
        if not hasattr(np, name):  # numpy 2's module __getattr__ raises AttributeError for removed names
            setattr(np, name, value)
            added.append(name)
    return added
