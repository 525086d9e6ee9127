"""The one place mxnet is imported: after the numpy-2 compatibility layer, once."""

from __future__ import annotations

import functools
import os
from types import ModuleType


@functools.lru_cache(maxsize=None)
def mxnet() -> ModuleType:
    """`import mxnet` with numpy's removed names restored and mxnet's numpy semantics on.

    Lazy so that importing the plugin (or listing backends) costs nothing, and
    the compatibility layer is applied only by a process that really uses mxnet.
    """
    from mlp_research_mxnet import numpy_compat

    numpy_compat.apply()
    # mxnet's threaded engine (its default), unless the user chose another (NaiveEngine runs ops serially, to debug).
    os.environ.setdefault("MXNET_ENGINE_TYPE", "ThreadedEnginePerDevice")
    import mxnet as mx

    mx.npx.set_np()  # numpy-compatible arrays and shapes, as the book's `npx.set_np()`
    return mx
