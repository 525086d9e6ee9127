"""The one place TensorFlow is imported (~4 s, on first import of this module): quietly, without grabbing all
GPU memory.

Its C++ INFO/WARNING logs are silenced unless the user set TF_CPP_MIN_LOG_LEVEL,
and every visible GPU gets memory growth, so TensorFlow takes what it uses
rather than the whole card that JAX or another framework may share.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

for _gpu in tf.config.list_physical_devices("GPU"):
    try:
        tf.config.experimental.set_memory_growth(_gpu, True)
    except RuntimeError:  # already initialised by the caller: their settings stand
        pass
