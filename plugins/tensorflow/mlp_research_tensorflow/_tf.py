"""The one place TensorFlow is imported: quietly, and without grabbing all GPU memory."""

from __future__ import annotations

import functools
import os
from types import ModuleType


@functools.cache
def import_tensorflow() -> ModuleType:
    """Import TensorFlow (~4 s) on first use; later calls return the module.

    Its C++ INFO/WARNING logs are silenced unless the user set TF_CPP_MIN_LOG_LEVEL,
    and every visible GPU gets memory growth, so TensorFlow takes what it uses
    rather than the whole card that JAX or another framework may share.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised by the caller: their settings stand
            pass
    return tf
