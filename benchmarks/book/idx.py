"""A numpy-only reader of the four Fashion-MNIST IDX files, for the book's code and the factor experiments.

The book's loaders download the data; here they are pointed at these files instead, so the book and the
project read the same bytes. Numpy only, so it imports in the book's environment and in the project's.
"""

from __future__ import annotations

import gzip
import hashlib
import os

import numpy as np

FILES = {
    ("train", "images"): "train-images-idx3-ubyte.gz",
    ("train", "labels"): "train-labels-idx1-ubyte.gz",
    ("test", "images"): "t10k-images-idx3-ubyte.gz",
    ("test", "labels"): "t10k-labels-idx1-ubyte.gz",
}
DEFAULT_DATA_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "fashion_mnist")


def data_dir() -> str:
    """The IDX directory: $BOOK_DATA_DIR, else ../shared/data/fashion_mnist beside the worktree."""
    return os.path.abspath(os.environ.get("BOOK_DATA_DIR", DEFAULT_DATA_DIR))


def read_idx(path: str) -> np.ndarray:
    """One IDX file (gzipped or plain) as a uint8 array of its declared shape."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {body.size} bytes for shape {shape}")
    return body.reshape(shape)


def load_split(split: str, directory: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels uint8 (N,)) of 'train' or 'test', in file order."""
    directory = directory or data_dir()
    images = read_idx(os.path.join(directory, FILES[(split, "images")]))
    labels = read_idx(os.path.join(directory, FILES[(split, "labels")]))
    if len(images) != len(labels):
        raise ValueError(f"{split}: {len(images)} images but {len(labels)} labels")
    return images, labels


def sha256_files(directory: str | None = None) -> dict[str, str]:
    """The checksum of each file, stored with the results so a reader knows which bytes were used."""
    directory = directory or data_dir()
    out = {}
    for name in sorted(FILES.values()):
        with open(os.path.join(directory, name), "rb") as f:
            out[name] = hashlib.sha256(f.read()).hexdigest()
    return out
