"""Reader for the IDX files of the original MNIST / Fashion-MNIST releases.

Format: two zero bytes, a type code (0x08 = uint8), the number of dimensions,
then one big-endian uint32 per dimension, then the data. Files may be gzipped.
Every check names the file, so a bad download is found at once.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from mlp_research.errors import DataError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IMAGES_MAGIC = 2051  # uint8, 3 dimensions
LABELS_MAGIC = 2049  # uint8, 1 dimension


def find_files(data_dir: str, required: bool = True) -> dict[str, str] | None:
    """Paths of the four files (plain or .gz) in `data_dir`; None if any is missing and not required."""
    found: dict[str, str] = {}
    missing = []
    for key, stem in FILES.items():
        for candidate in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
            path = os.path.join(data_dir, candidate)
            if os.path.isfile(path):
                found[key] = path
                break
        else:
            missing.append(stem + "[.gz]")
    if missing:
        if not required:
            return None
        if not os.path.isdir(data_dir):
            raise DataError(f"--data_dir: {data_dir} is not a directory holding the Fashion-MNIST IDX files")
        raise DataError(
            f"--data_dir: {data_dir} lacks {', '.join(missing)}; put the four files of the original "
            "Fashion-MNIST release there (gzipped or not)"
        )
    return found


def read_idx(path: str, expected_magic: int) -> np.ndarray:
    """Read one IDX file as a uint8 array, validating magic number and length."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:2] == b"\x1f\x8b":
            # One C call, not a Python loop over chunks: it holds the GIL once, so a background
            # thread (the plotting preload) cannot slow it down several-fold.
            data = gzip.decompress(data)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if len(data) < 4:
        raise DataError(f"{path}: truncated (only {len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise DataError(f"{path}: bad magic number {magic}, expected {expected_magic}; not an IDX file of this kind")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated header")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    body = len(data) - header
    if body != expected:
        what = "truncated" if body < expected else "has trailing bytes"
        raise DataError(f"{path}: {what}: header says {dims} = {expected} bytes, file holds {body}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_dir(data_dir: str) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(train_images, train_labels), (test_images, test_labels) as uint8 arrays."""
    paths = find_files(data_dir)
    assert paths is not None
    arrays = {}
    for key, path in paths.items():
        arrays[key] = read_idx(path, IMAGES_MAGIC if key.endswith("images") else LABELS_MAGIC)
        if key.endswith("images") and arrays[key].shape[1:] != (28, 28):
            raise DataError(f"{path}: images are {arrays[key].shape[1:]}, expected 28x28")
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise DataError(
                f"{paths[split + '_labels']}: {len(labels)} labels but {paths[split + '_images']} "
                f"holds {len(images)} images"
            )
        if labels.size and labels.max() > 9:
            raise DataError(f"{paths[split + '_labels']}: label {labels.max()} outside 0..9")
    return (arrays["train_images"], arrays["train_labels"]), (arrays["test_images"], arrays["test_labels"])


def write_idx(path: str, array: np.ndarray, compress: bool | None = None) -> None:
    """Write a uint8 array as an IDX file (gzipped if `path` ends in .gz); for tests and tools."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    compress = path.endswith(".gz") if compress is None else compress
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())
