"""Fashion-MNIST from TensorFlow Datasets; the only module that imports TF.

TensorFlow is imported here alone (it costs seconds and lean or GPU installs
lack it). A prepared tfds data dir loads offline with `download=False`; an
unprepared one downloads only after a quick reachability probe, so an offline
machine fails in seconds instead of retrying for minutes.
"""

from __future__ import annotations

import os
import socket
import urllib.parse

import numpy as np

from mlp_research.errors import DataError

NAME = "fashion_mnist"
HOW_TO_PROVIDE = (
    "put the four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
    "t10k-labels-idx1-ubyte.gz) in a directory and pass --data_dir=DIR (or set MLP_RESEARCH_DATA_DIR)"
)


def _import_tfds():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(
            f"--data_source=tfds needs tensorflow and tensorflow-datasets ({e}); or {HOW_TO_PROVIDE}") from None
    # tfds only reads files here: keep TensorFlow off any GPU that JAX will use.
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        pass
    return tfds


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the host of `url` accepts a TCP connection within `timeout` seconds."""
    parsed = urllib.parse.urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def load(data_dir: str | None) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(train_images, train_labels), (test_images, test_labels) as uint8/int arrays."""
    tfds = _import_tfds()
    builder = tfds.builder(NAME, data_dir=data_dir)
    prepared = builder.is_prepared() if hasattr(builder, "is_prepared") else os.path.isdir(builder.data_dir)
    where = data_dir or "~/tensorflow_datasets"
    if not prepared:
        url = getattr(type(builder), "URL", "https://storage.googleapis.com")
        if not reachable(url):
            raise DataError(
                f"--data_dir: no prepared tfds '{NAME}' in {where} and the download host is unreachable; "
                f"{HOW_TO_PROVIDE}"
            )
        try:
            builder.download_and_prepare()
        except Exception as e:  # tfds raises many kinds; all mean the same here.
            raise DataError(f"--data_source=tfds: download of '{NAME}' failed ({e}); {HOW_TO_PROVIDE}") from None
    splits = []
    for split in ("train", "test"):
        # Batched iteration rather than batch_size=-1, which aborts under tfds.testing.mock_data.
        ds = builder.as_dataset(split=split, as_supervised=True, batch_size=10_000, shuffle_files=False)
        images, labels = [], []
        for x, y in tfds.as_numpy(ds):
            images.append(x)
            labels.append(y)
        if not images:  # an empty split would fail later as a division by zero or a --batch_size complaint
            raise DataError(f"--data_dir: the {split} split of tfds '{NAME}' in {where} holds no examples; "
                            f"{HOW_TO_PROVIDE}")
        x = np.concatenate(images)
        if x.ndim == 4:
            x = x[..., 0]
        splits.append((x.astype(np.uint8), np.concatenate(labels).astype(np.uint8)))
    return splits[0], splits[1]
