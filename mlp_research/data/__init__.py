"""Fashion-MNIST (or a synthetic stand-in) as arrays ready for any device.

`load_splits(config)` returns float32 images in [0, 1] shaped (N, 28, 28) (with
the uint8 pixels they came from) and int32 labels, split into `train`, the split
evaluated every epoch (`eval`: the test split as in d2l, or a validation split
carved from the training set), and `test`. Sources: the original IDX files
(`idx.py`), TensorFlow Datasets (`tfds_source.py`, imported only when used) and
`synthetic.py`.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from mlp_research.config import DATA_DIR_ENV, Config, validation_size
from mlp_research.errors import ConfigError, DataError

CLASS_NAMES = (
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
)
# The validation hold-out and the training subset are drawn with fixed seeds, not the run's
# seed, so every trial of a sweep sees the same examples.
SPLIT_SEED = 20_240_601
SUBSET_SEED = 0


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: images (N, 28, 28) float32 in [0, 1], labels (N,) int32.

    `pixels`, when the source had them, are the uint8 values the images were
    made from (`images == PIXEL_VALUES[pixels]`): a backend may keep those on
    its device instead, a quarter of the memory and of the bytes each batch reads.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    pixels: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.pixels is not None and (self.pixels.dtype != np.uint8 or self.pixels.shape != self.images.shape):
            raise ValueError(f"split {self.name}: pixels {self.pixels.dtype}{self.pixels.shape} do not match "
                             f"images {self.images.shape}")

    @classmethod
    def from_pixels(cls, name: str, pixels: np.ndarray, labels: np.ndarray) -> "Split":
        pixels = as_pixels(pixels).view()
        pixels.flags.writeable = False  # may be shared with the loader's cache (and other splits)
        return cls(name, _pixel_values(pixels), labels.astype(np.int32), pixels)

    @property
    def compact_images(self) -> np.ndarray:
        """The smallest exact form of the images: the uint8 pixels when known, else the float32 images."""
        return self.images if self.pixels is None else self.pixels

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclasses.dataclass(frozen=True)
class Splits:
    train: Split
    eval: Split  # evaluated every epoch: "test" or "validation"
    test: Split
    source: str  # where the data came from, for summaries


def as_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 images of any source ((N, 28, 28) or (N, 28, 28, 1)) shaped (N, 28, 28)."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    return images.reshape(images.shape[0], 28, 28)


def _pixel_values(pixels: np.ndarray) -> np.ndarray:
    # One pass and one allocation (the same values as astype, then divide).
    return np.divide(pixels, np.float32(255.0), dtype=np.float32)


# The float32 value of each uint8 pixel: the one conversion, as a table a compiled step can index.
# (Exact: XLA's own x / 255 is not correctly rounded on every device, a table lookup is.)
PIXEL_VALUES = _pixel_values(np.arange(256, dtype=np.uint8))


def to_float_images(images: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1], shaped (N, 28, 28)."""
    return _pixel_values(as_pixels(images))


def load_arrays(config: Config) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], str]:
    """(train_images_u8, train_labels), (test_images_u8, test_labels), source description."""
    if config.dataset == "synthetic":
        from mlp_research.data import synthetic

        train, test = synthetic.make(config.synthetic_train_size, config.synthetic_test_size)
        return train, test, "synthetic"
    data_dir = config.resolved_data_dir()
    origin = "--data_dir" if config.data_dir else f"${DATA_DIR_ENV}"  # what the user set, for messages
    source = config.data_source
    if data_dir and not os.path.isdir(data_dir):
        raise DataError(f"{origin}: {data_dir} does not exist (or is not a directory)")
    from mlp_research.data import idx

    if source == "auto":
        source = "idx" if data_dir and idx.find_files(data_dir, required=False, origin=origin) else "tfds"
    if source == "idx":
        if not data_dir:
            raise DataError(
                "--data_dir: no directory given for --data_source=idx; pass --data_dir or set MLP_RESEARCH_DATA_DIR"
            )
        train, test = idx.load_dir(data_dir, origin)
        return train, test, f"idx:{os.path.abspath(data_dir)}"
    from mlp_research.data import tfds_source

    train, test = tfds_source.load(data_dir or None)
    return train, test, f"tfds:{data_dir or '~/tensorflow_datasets'}"


# Fields that say which raw arrays a config reads: one load serves every config that agrees on them.
_SOURCE_FIELDS = ("dataset", "data_source", "synthetic_train_size", "synthetic_test_size")
_cache: dict[tuple, tuple] = {}


def _cached_arrays(config: Config) -> tuple:
    """`load_arrays`, kept for the last source read: sweeps and groups in one process load the data once."""
    key = (*(getattr(config, f) for f in _SOURCE_FIELDS), _fingerprint(config.resolved_data_dir()))
    if key not in _cache:
        _cache.clear()
        _cache[key] = load_arrays(config)
    return _cache[key]


def _fingerprint(data_dir: str) -> tuple:
    """The directory and the name, size and mtime of what it holds: a changed file is read again."""
    if not data_dir or not os.path.isdir(data_dir):
        return (data_dir,)
    try:
        entries = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(data_dir))
    except OSError:
        return (data_dir, object())  # unreadable: never a cache hit, let the loader report it
    return (os.path.abspath(data_dir), *entries)


def load_splits(config: Config) -> Splits:
    """Load, convert and split the data a run needs (validation hold-out, then the training subset)."""
    (train_x, train_y), (test_x, test_y), source = _cached_arrays(config)
    test = Split.from_pixels("test", test_x, test_y)
    n_val = validation_size(len(train_y), config.val_fraction)
    if n_val >= len(train_y):  # only data far smaller than Fashion-MNIST get here (Config checked 60,000)
        raise ConfigError(f"--val_fraction: {config.val_fraction} holds out all {len(train_y)} training examples "
                          f"of {source}; lower it")
    train_idx = np.arange(len(train_y))
    val = None
    if n_val:
        order = np.random.default_rng(SPLIT_SEED).permutation(len(train_y))
        val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
        val = Split.from_pixels("validation", train_x[val_idx], train_y[val_idx])
    if config.train_subset > len(train_idx):
        held_out = f" after the validation hold-out of {n_val}" if n_val else ""
        raise ConfigError(f"--train_subset: {config.train_subset} is larger than the training set "
                          f"({len(train_idx)} examples of {source}{held_out}); lower it, or 0 for all")
    if config.train_subset and config.train_subset < len(train_idx):
        pick = np.random.default_rng(SUBSET_SEED).permutation(len(train_idx))[: config.train_subset]
        train_idx = train_idx[np.sort(pick)]
    images = train_x if len(train_idx) == len(train_y) else train_x[train_idx]
    train = Split.from_pixels("train", images, train_y[train_idx])
    return Splits(train=train, eval=val if val is not None else test, test=test, source=source)
