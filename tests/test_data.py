"""Data loading: the IDX reader on tiny files, splits, synthetic data, the real files and tfds."""

from __future__ import annotations

import gzip
import os
import threading
import time
import tracemalloc
import types
from pathlib import Path

import numpy as np
import pytest

from mlp_research.config import DATA_DIR_ENV, Config
from mlp_research.data import (
    PIXEL_VALUES,
    SPLIT_SEED,
    Split,
    idx,
    load_arrays,
    load_splits,
    synthetic,
    to_float_images,
)
from mlp_research.data.idx import FILES, write_idx
from mlp_research.errors import ConfigError, DataError


def _find_real_data() -> Path | None:
    """$MLP_RESEARCH_DATA_DIR, else ../shared/data/fashion_mnist next to the repo; None if neither holds the files."""
    candidates = [os.environ.get(DATA_DIR_ENV, ""), Path(__file__).resolve().parents[2] / "shared/data/fashion_mnist"]
    for candidate in filter(None, candidates):
        path = Path(candidate)
        if all((path / stem).is_file() or (path / (stem + ".gz")).is_file() for stem in FILES.values()):
            return path
    return None


# Located before the autouse fixture below clears the environment variable.
REAL_DATA_DIR = _find_real_data()


@pytest.fixture(autouse=True)
def _no_data_dir_env(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


def make_images(n: int, offset: int = 0) -> np.ndarray:
    """n distinct 28x28 uint8 images: image i encodes `offset + i` in its first two pixels."""
    rng = np.random.default_rng(offset)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    ids = np.arange(offset, offset + n)
    images[:, 0, 0] = ids % 256
    images[:, 0, 1] = ids // 256
    images[0, 5, 5], images[-1, 5, 6] = 0, 255  # the full range
    return images


def image_ids(images: np.ndarray) -> np.ndarray:
    """Inverse of the encoding of `make_images`, from float images in [0, 1]."""
    raw = np.rint(images[:, 0, :2] * 255).astype(np.int64)
    return raw[:, 0] + 256 * raw[:, 1]


def write_dataset(directory: Path, n_train: int = 50, n_test: int = 20, gz: bool = True) -> dict:
    """Write the four IDX files of a tiny Fashion-MNIST; return the arrays written."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": make_images(n_train),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": make_images(n_test, offset=1000),
        "test_labels": ((np.arange(n_test) * 7) % 10).astype(np.uint8),
    }
    for key, array in arrays.items():
        write_idx(str(directory / (FILES[key] + (".gz" if gz else ""))), array)
    return arrays


def path_of(directory: Path, key: str, gz: bool) -> Path:
    return directory / (FILES[key] + (".gz" if gz else ""))


def write_raw(path: Path, payload: bytes, gz: bool) -> None:
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def idx_config(data_dir: Path, **kwargs) -> Config:
    return Config(data_dir=str(data_dir), data_source=kwargs.pop("data_source", "idx"), **kwargs)


# ------------------------------------------------------------------ IDX files


def test_write_idx_bytes_match_the_format(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(str(tmp_path / "a"), array)
    data = (tmp_path / "a").read_bytes()
    assert data[:4] == b"\x00\x00\x08\x03"
    assert [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(3)] == [2, 3, 4]
    assert data[16:] == array.tobytes()
    write_idx(str(tmp_path / "a.gz"), array)
    assert gzip.decompress((tmp_path / "a.gz").read_bytes()) == data


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_read_idx_round_trip(tmp_path, gz):
    images = make_images(5)
    path = tmp_path / ("x.gz" if gz else "x")
    write_idx(str(path), images)
    got = idx.read_idx(str(path), idx.IMAGES_MAGIC)
    assert got.dtype == np.uint8 and got.shape == (5, 28, 28)
    np.testing.assert_array_equal(got, images)


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_load_splits_shapes_dtypes_and_values(tmp_path, gz):
    arrays = write_dataset(tmp_path, gz=gz)
    splits = load_splits(idx_config(tmp_path))
    assert splits.source == f"idx:{os.path.abspath(tmp_path)}"
    assert len(splits.train) == 50 and len(splits.test) == 20
    assert splits.eval is splits.test  # val_fraction=0 evaluates the test split, as d2l
    for split, prefix in ((splits.train, "train"), (splits.test, "test")):
        assert split.images.shape == (len(split), 28, 28)
        assert split.images.dtype == np.float32
        assert split.labels.dtype == np.int32
        assert split.labels.shape == (len(split),)
        assert split.images.min() == 0.0 and split.images.max() == 1.0
        np.testing.assert_array_equal(split.images, arrays[f"{prefix}_images"].astype(np.float32) / 255)
        np.testing.assert_array_equal(split.labels, arrays[f"{prefix}_labels"])


def test_plain_and_dotted_file_names_are_found(tmp_path):
    write_dataset(tmp_path / "plain", gz=False)
    assert set(idx.find_files(str(tmp_path / "plain"))) == set(FILES)
    dotted = tmp_path / "dotted"
    dotted.mkdir()
    for key, array in write_dataset(tmp_path / "src").items():
        write_idx(str(dotted / FILES[key].replace("-idx", ".idx")), array)
    (train_x, _), (test_x, _) = idx.load_dir(str(dotted))
    assert train_x.shape == (50, 28, 28) and test_x.shape == (20, 28, 28)


def test_to_float_images_accepts_channel_axis():
    images = make_images(3)
    out = to_float_images(images[..., None])
    assert out.shape == (3, 28, 28) and out.dtype == np.float32
    np.testing.assert_array_equal(out, images / np.float32(255))


def test_pixel_table_is_the_exact_conversion_of_every_pixel_value():
    every = np.resize(np.arange(256, dtype=np.uint8), (1, 28, 28))
    np.testing.assert_array_equal(PIXEL_VALUES[every], to_float_images(every))
    assert PIXEL_VALUES.dtype == np.float32 and PIXEL_VALUES[0] == 0 and PIXEL_VALUES[255] == 1


def test_loaded_splits_keep_their_uint8_pixels_read_only(tmp_path):
    write_dataset(tmp_path)
    splits = load_splits(Config().replace(data_dir=str(tmp_path), val_fraction=0.2))
    for split in (splits.train, splits.eval, splits.test):
        assert split.compact_images is split.pixels and split.pixels.dtype == np.uint8
        np.testing.assert_array_equal(PIXEL_VALUES[split.pixels], split.images)
        with pytest.raises(ValueError):
            split.pixels[0, 0, 0] = 1  # shared with the loader's cache: nobody may change it


def test_split_refuses_pixels_that_are_not_its_images():
    images = to_float_images(make_images(3))
    with pytest.raises(ValueError, match="split train: pixels"):
        Split("train", images, np.zeros(3, np.int32), make_images(2))
    with pytest.raises(ValueError, match="pixels float32"):
        Split("train", images, np.zeros(3, np.int32), images)
    assert Split("train", images, np.zeros(3, np.int32)).compact_images is images  # no pixels: the floats


# ------------------------------------------------------------ malformed files


def corrupt(directory: Path, key: str, payload: bytes, gz: bool) -> Path:
    path = path_of(directory, key, gz)
    write_raw(path, payload, gz)
    return path


def _wrong_magic(d, gz):  # a labels file where the images file should be
    return corrupt(d, "train_images", idx_bytes(np.zeros(50, np.uint8)), gz)


def _garbage(d, gz):
    return corrupt(d, "test_images", b"<html>404 Not Found</html>" * 10, gz)


def _truncated_body(d, gz):
    return corrupt(d, "train_images", idx_bytes(make_images(50))[:-100], gz)


def _trailing_bytes(d, gz):
    return corrupt(d, "test_labels", idx_bytes(np.zeros(20, np.uint8)) + b"\x00\x01", gz)


def _truncated_header(d, gz):
    return corrupt(d, "train_images", idx_bytes(make_images(50))[:10], gz)


def _tiny_file(d, gz):
    return corrupt(d, "train_labels", b"\x00\x00", gz)


def _empty_file(d, gz):
    return corrupt(d, "test_labels", b"", gz)


def _count_mismatch(d, gz):
    return corrupt(d, "train_labels", idx_bytes(np.zeros(49, np.uint8)), gz)


def _test_count_mismatch(d, gz):
    return corrupt(d, "test_labels", idx_bytes(np.zeros(21, np.uint8)), gz)


def _label_too_large(d, gz):
    labels = np.zeros(50, np.uint8)
    labels[17] = 10
    return corrupt(d, "train_labels", idx_bytes(labels), gz)


def _test_label_too_large(d, gz):
    return corrupt(d, "test_labels", idx_bytes(np.full(20, 255, np.uint8)), gz)


def _wrong_image_size(d, gz):
    return corrupt(d, "test_images", idx_bytes(np.zeros((20, 32, 32), np.uint8)), gz)


MALFORMED = {
    "wrong_magic": _wrong_magic,
    "garbage": _garbage,
    "truncated_body": _truncated_body,
    "trailing_bytes": _trailing_bytes,
    "truncated_header": _truncated_header,
    "tiny_file": _tiny_file,
    "empty_file": _empty_file,
    "count_mismatch": _count_mismatch,
    "test_count_mismatch": _test_count_mismatch,
    "label_too_large": _label_too_large,
    "test_label_too_large": _test_label_too_large,
    "wrong_image_size": _wrong_image_size,
}


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_file_raises_data_error_naming_the_file(tmp_path, case, gz):
    write_dataset(tmp_path, gz=gz)
    bad_path = MALFORMED[case](tmp_path, gz)
    with pytest.raises(DataError) as info:
        load_splits(idx_config(tmp_path))
    message = str(info.value)
    assert str(bad_path) in message, message
    assert info.value.exit_code == 3
    assert "\n" not in message


@pytest.mark.parametrize(
    "case, words",
    [
        ("wrong_magic", ["magic"]),
        ("truncated_body", ["truncated"]),
        ("truncated_header", ["truncated"]),
        ("tiny_file", ["truncated"]),
        ("count_mismatch", ["49 labels", "50 images"]),
        ("label_too_large", ["10"]),
        ("wrong_image_size", ["28"]),
    ],
)
def test_malformed_file_messages_say_what_is_wrong(tmp_path, case, words):
    write_dataset(tmp_path)
    MALFORMED[case](tmp_path, True)
    with pytest.raises(DataError) as info:
        idx.load_dir(str(tmp_path))
    for word in words:
        assert word in str(info.value), str(info.value)


def test_count_mismatch_names_both_files(tmp_path):
    write_dataset(tmp_path)
    _count_mismatch(tmp_path, True)
    with pytest.raises(DataError) as info:
        idx.load_dir(str(tmp_path))
    assert str(path_of(tmp_path, "train_labels", True)) in str(info.value)
    assert str(path_of(tmp_path, "train_images", True)) in str(info.value)


def test_cut_gzip_stream_raises_data_error_naming_the_file(tmp_path):
    write_dataset(tmp_path)
    path = path_of(tmp_path, "train_images", True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a download cut short
    with pytest.raises(DataError, match=str(path)):
        load_splits(idx_config(tmp_path))


def test_directory_in_place_of_a_file_counts_as_missing(tmp_path):
    write_dataset(tmp_path, gz=False)
    path = path_of(tmp_path, "test_images", False)
    path.unlink()
    path.mkdir()  # a directory where the file should be: not found as a file
    with pytest.raises(DataError) as info:
        load_splits(idx_config(tmp_path))
    assert "t10k-images-idx3-ubyte" in str(info.value) and str(tmp_path) in str(info.value)


@pytest.mark.parametrize("key", list(FILES))
def test_missing_file_names_the_file_and_the_dir(tmp_path, key):
    write_dataset(tmp_path)
    path_of(tmp_path, key, True).unlink()
    with pytest.raises(DataError) as info:
        load_splits(idx_config(tmp_path))
    message = str(info.value)
    assert FILES[key] in message and str(tmp_path) in message, message
    for other in set(FILES) - {key}:
        assert FILES[other] not in message, message  # only the missing one is named


def test_missing_dir_is_named(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as info:
        load_splits(idx_config(missing))
    assert str(missing) in str(info.value)
    assert str(info.value).startswith("--data_dir:")


def test_idx_source_without_dir_asks_for_data_dir():
    with pytest.raises(DataError, match="--data_dir"):
        load_splits(Config(data_source="idx"))


# ------------------------------------------------------------- source choice


def test_auto_picks_idx_when_files_are_present(tmp_path):
    write_dataset(tmp_path)
    splits = load_splits(idx_config(tmp_path, data_source="auto"))
    assert splits.source.startswith("idx:")
    assert len(splits.train) == 50


def test_auto_uses_data_dir_from_environment(tmp_path, monkeypatch):
    write_dataset(tmp_path, gz=False)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    config = Config(data_source="auto")
    assert config.resolved_data_dir() == str(tmp_path)
    splits = load_splits(config)
    assert splits.source == f"idx:{os.path.abspath(tmp_path)}"
    assert len(splits.test) == 20


def test_flag_data_dir_wins_over_environment(tmp_path, monkeypatch):
    write_dataset(tmp_path / "flag", n_train=30)
    write_dataset(tmp_path / "env", n_train=40)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    assert len(load_splits(idx_config(tmp_path / "flag", data_source="auto")).train) == 30


def test_auto_without_files_does_not_pick_idx(tmp_path, monkeypatch):
    # With the files absent, auto must fall through to tfds; stub it so no TensorFlow is imported.
    import mlp_research.data.tfds_source as tfds_source

    calls = []

    def fake_load(data_dir):
        calls.append(data_dir)
        return write_dataset_arrays()

    monkeypatch.setattr(tfds_source, "load", fake_load)
    (tmp_path / "empty").mkdir()
    _, _, source = load_arrays(idx_config(tmp_path / "empty", data_source="auto"))
    assert source.startswith("tfds:")
    assert calls == [str(tmp_path / "empty")]


def write_dataset_arrays():
    return (make_images(10), np.zeros(10, np.uint8)), (make_images(5), np.zeros(5, np.uint8))


# --------------------------------------------------------------- validation


@pytest.mark.parametrize("fraction, n_val", [(0.1, 5), (0.2, 10), (0.5, 25), (0.02, 1)])
def test_val_fraction_split_sizes(tmp_path, fraction, n_val):
    arrays = write_dataset(tmp_path)
    splits = load_splits(idx_config(tmp_path, val_fraction=fraction))
    assert splits.eval.name == "validation"
    assert len(splits.eval) == n_val
    assert len(splits.train) == 50 - n_val
    assert len(splits.test) == 20
    # Train and validation partition the original training set, labels travelling with their images.
    ids = np.concatenate([image_ids(splits.train.images), image_ids(splits.eval.images)])
    assert sorted(ids.tolist()) == list(range(50))
    labels = np.concatenate([splits.train.labels, splits.eval.labels])
    np.testing.assert_array_equal(labels, arrays["train_labels"][ids])
    assert splits.eval.images.dtype == np.float32 and splits.eval.labels.dtype == np.int32
    np.testing.assert_array_equal(image_ids(splits.test.images), np.arange(1000, 1020))


def test_validation_split_does_not_depend_on_the_run_seed(tmp_path):
    write_dataset(tmp_path, n_train=200)
    a = load_splits(idx_config(tmp_path, val_fraction=0.25, seed=0))
    b = load_splits(idx_config(tmp_path, val_fraction=0.25, seed=12345))
    np.testing.assert_array_equal(image_ids(a.eval.images), image_ids(b.eval.images))
    np.testing.assert_array_equal(a.eval.labels, b.eval.labels)
    np.testing.assert_array_equal(image_ids(a.train.images), image_ids(b.train.images))
    # Drawn at random (with SPLIT_SEED), not simply the last examples.
    val_ids = image_ids(a.eval.images)
    assert sorted(val_ids.tolist()) != list(range(150, 200))
    expected = np.sort(np.random.default_rng(SPLIT_SEED).permutation(200)[:50])
    np.testing.assert_array_equal(val_ids, expected)


def test_synthetic_with_validation_sizes():
    config = Config(dataset="synthetic", synthetic_train_size=1000, synthetic_test_size=200,
                    val_fraction=0.1, batch_size=64)
    splits = load_splits(config)
    assert (len(splits.train), len(splits.eval), len(splits.test)) == (900, 100, 200)
    assert splits.source == "synthetic"


# ---------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic():
    (a_x, a_y), (a_tx, a_ty) = synthetic.make(300, 50)
    (b_x, b_y), (b_tx, b_ty) = synthetic.make(300, 50)
    for a, b in ((a_x, b_x), (a_y, b_y), (a_tx, b_tx), (a_ty, b_ty)):
        np.testing.assert_array_equal(a, b)
    assert a_x.shape == (300, 28, 28) and a_x.dtype == np.uint8
    assert a_tx.shape == (50, 28, 28) and a_ty.shape == (50,)
    assert set(np.unique(a_y).tolist()) == set(range(10))
    assert a_ty.max() <= 9
    assert not np.array_equal(a_x[:50], a_tx)  # test examples are fresh draws


def test_synthetic_load_splits_is_deterministic_and_seed_independent():
    config = Config(dataset="synthetic", synthetic_train_size=256, synthetic_test_size=64, batch_size=32)
    a = load_splits(config)
    b = load_splits(config.replace(seed=99))
    for split in ("train", "test"):
        np.testing.assert_array_equal(getattr(a, split).images, getattr(b, split).images)
        np.testing.assert_array_equal(getattr(a, split).labels, getattr(b, split).labels)
    assert a.train.images.dtype == np.float32 and a.train.labels.dtype == np.int32
    assert 0.0 <= a.train.images.min() and a.train.images.max() <= 1.0


def test_synthetic_classes_are_learnable_by_nearest_mean():
    # The data's promise (learnable in an epoch or two): class means separate the test set.
    (x, y), (tx, ty) = synthetic.make(2000, 500)
    x, tx = x.reshape(len(x), -1) / 255.0, tx.reshape(len(tx), -1) / 255.0
    means = np.stack([x[y == c].mean(0) for c in range(10)])
    pred = np.argmin(((tx[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert (pred == ty).mean() > 0.8


# --------------------------------------------------------------- real files


@pytest.mark.skipif(REAL_DATA_DIR is None, reason=f"Fashion-MNIST IDX files not found (set {DATA_DIR_ENV})")
def test_real_fashion_mnist():
    splits = load_splits(Config(data_dir=str(REAL_DATA_DIR), data_source="idx"))
    assert len(splits.train) == 60_000 and len(splits.test) == 10_000
    assert splits.train.images.shape == (60_000, 28, 28) and splits.train.images.dtype == np.float32
    assert splits.train.labels.dtype == np.int32
    assert abs(splits.train.images.mean(dtype=np.float64) - 0.2860) < 1e-3
    assert abs(splits.train.images.std(dtype=np.float64) - 0.3528) < 1e-3
    np.testing.assert_array_equal(np.bincount(splits.train.labels, minlength=10), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(splits.test.labels, minlength=10), [1000] * 10)
    assert splits.train.images.min() == 0.0 and splits.train.images.max() == 1.0


# ---------------------------------------------------------------------- tfds


def test_tfds_mock_data(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    from mlp_research.data import tfds_source

    # mock_data makes download_and_prepare a no-op; the reachability probe in
    # front of it is the loader's only network access, so take it out.
    monkeypatch.setattr(tfds_source, "reachable", lambda *args, **kwargs: True)
    with tfds.testing.mock_data(num_examples=37):
        (train_x, train_y), (test_x, test_y) = tfds_source.load(None)
        splits = load_splits(Config(data_source="tfds", val_fraction=0.1))
    for x, y in ((train_x, train_y), (test_x, test_y)):
        assert x.shape == (37, 28, 28) and x.dtype == np.uint8
        assert y.shape == (37,) and y.dtype == np.uint8
        assert y.max() <= 9
    assert splits.source.startswith("tfds:")
    assert (len(splits.train), len(splits.eval), len(splits.test)) == (33, 4, 37)
    assert splits.train.images.dtype == np.float32 and splits.train.labels.dtype == np.int32
    assert 0.0 <= splits.train.images.min() and splits.train.images.max() <= 1.0


def test_tfds_offline_fails_fast_naming_data_dir(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    from mlp_research.data import tfds_source

    probed = []

    def unreachable(url, timeout=3.0):
        probed.append(url)
        return False

    monkeypatch.setattr(tfds_source, "reachable", unreachable)
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        tfds_source.load(str(tmp_path))
    assert time.monotonic() - start < 30
    assert probed, "the download host was not probed"
    message = str(info.value)
    assert "--data_dir" in message and str(tmp_path) in message, message
    assert info.value.exit_code == 3
    assert not any(tmp_path.rglob("*.tfrecord*"))  # nothing was downloaded


# ------------------------------------------------- hardening (issue 13): sizes, odd entries


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_empty_split_names_its_images_file(tmp_path, split, gz):
    write_dataset(tmp_path, gz=gz)
    corrupt(tmp_path, f"{split}_images", idx_bytes(np.zeros((0, 28, 28), np.uint8)), gz)
    corrupt(tmp_path, f"{split}_labels", idx_bytes(np.zeros(0, np.uint8)), gz)
    with pytest.raises(DataError) as info:
        load_splits(idx_config(tmp_path))
    message = str(info.value)
    assert message.startswith(f"{path_of(tmp_path, f'{split}_images', gz)}: holds no examples"), message
    assert "batch_size" not in message


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_dimensions_whose_product_overflows_int64(tmp_path, gz):
    # 2**22 * 2**21 * 2**21 = 2**64: an int64 product wraps to 0 and "matches" an empty body.
    path = tmp_path / ("x.gz" if gz else "x")
    write_raw(path, bytes([0, 0, 8, 3]) + b"".join((2**k).to_bytes(4, "big") for k in (22, 21, 21)), gz)
    with pytest.raises(DataError) as info:
        idx.read_idx(str(path), idx.IMAGES_MAGIC)
    assert str(path) in str(info.value) and str(2**64) in str(info.value) and "truncated" in str(info.value)


def refused_cheaply(path: Path, magic: int | None = None, max_bytes: int = 1 << 20) -> str:
    """The DataError of reading `path` (IDX file with `magic`, else a data dir), allocating under `max_bytes`."""
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as info:
            idx.read_idx(str(path), magic) if magic else idx.load_dir(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < max_bytes, f"allocated {peak} bytes to refuse {path}"
    assert str(path) in str(info.value)
    return str(info.value)


def test_huge_plain_file_is_refused_before_its_body_is_read(tmp_path):
    path = tmp_path / FILES["train_labels"]
    path.write_bytes(idx_bytes(np.zeros(50, np.uint8)))
    with open(path, "r+b") as f:
        f.truncate(1 << 30)  # sparse: 1 GiB of nothing on disk
    assert "has trailing bytes" in refused_cheaply(path, idx.LABELS_MAGIC)


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_header_claiming_a_huge_size_is_refused_at_once(tmp_path, gz):
    path = tmp_path / "x"
    write_raw(path, idx_bytes(make_images(3))[:4] + b"".join(d.to_bytes(4, "big") for d in (2**32 - 1, 28, 28))
              + bytes(1000), gz)
    message = refused_cheaply(path, idx.IMAGES_MAGIC)
    assert "truncated" in message and str((2**32 - 1) * 784) in message


def test_gzip_bomb_is_never_decompressed_past_its_header_size(tmp_path):
    path = tmp_path / "labels.gz"
    write_raw(path, idx_bytes(np.zeros(20, np.uint8)) + bytes(64 << 20), gz=True)  # 64 MiB of zeros, ~64 KiB gzipped
    assert "has trailing bytes" in refused_cheaply(path, idx.LABELS_MAGIC)


def test_gzip_file_far_larger_than_its_header_needs_is_refused_unread(tmp_path):
    path = tmp_path / "labels.gz"
    noise = np.random.default_rng(0).integers(0, 256, 2 << 20, dtype=np.uint8).tobytes()
    write_raw(path, idx_bytes(np.zeros(20, np.uint8)) + noise, gz=True)  # incompressible: a 2 MiB file
    message = refused_cheaply(path, idx.LABELS_MAGIC, max_bytes=512 << 10)
    assert "compressed bytes, far more than the 28 bytes" in message, message


def test_multi_member_and_zero_padded_gzip_files_still_read(tmp_path):
    data = idx_bytes(make_images(7))
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(data[:1000]) + gzip.compress(data[1000:]) + bytes(512))
    np.testing.assert_array_equal(idx.read_idx(str(path), idx.IMAGES_MAGIC), make_images(7))
    path.write_bytes(gzip.compress(data) + gzip.compress(b"x"))  # a second member is more data
    with pytest.raises(DataError, match="has trailing bytes"):
        idx.read_idx(str(path), idx.IMAGES_MAGIC)


@pytest.mark.parametrize("cut, extra, words", [(8, b"", "truncated: the gzip stream stops before its end"),
                                               (0, b"<html>", "has trailing bytes")], ids=["no_trailer", "garbage"])
def test_gzip_stream_ends_are_named(tmp_path, cut, extra, words):
    path = tmp_path / "x.gz"
    data = gzip.compress(idx_bytes(make_images(7)))
    path.write_bytes(data[: len(data) - cut] + extra)
    with pytest.raises(DataError) as info:
        idx.read_idx(str(path), idx.IMAGES_MAGIC)
    assert str(info.value).startswith(f"{path}: {words}"), str(info.value)


def test_wrong_image_size_is_refused_before_the_body_is_read(tmp_path):
    write_dataset(tmp_path, gz=False)
    path = corrupt(tmp_path, "train_images", idx_bytes(np.zeros((1024, 1024, 1024), np.uint8))[:16], gz=False)
    with open(path, "r+b") as f:
        f.truncate(16 + (1 << 30))  # sparse, and of the size its header says
    message = refused_cheaply(tmp_path)
    assert message == f"{path}: images are (1024, 1024), expected 28x28", message


@pytest.fixture
def no_tfds(monkeypatch):
    """auto must not fall back to TensorFlow Datasets: make that fallback fail the test."""
    import mlp_research.data.tfds_source as tfds_source

    def fail(data_dir):
        raise AssertionError(f"fell back to tfds for {data_dir}")

    monkeypatch.setattr(tfds_source, "load", fail)


@pytest.mark.parametrize("via_env", [False, True], ids=["flag", "env"])
@pytest.mark.parametrize("key", list(FILES))
def test_auto_refuses_a_data_dir_with_some_of_the_files(tmp_path, monkeypatch, no_tfds, key, via_env):
    write_dataset(tmp_path)
    path_of(tmp_path, key, True).unlink()
    if via_env:
        monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    config = Config(data_source="auto") if via_env else idx_config(tmp_path, data_source="auto")
    with pytest.raises(DataError) as info:
        load_splits(config)
    message = str(info.value)
    assert message.startswith(f"{'$' + DATA_DIR_ENV if via_env else '--data_dir'}: {tmp_path} lacks {FILES[key]}[.gz]")
    assert info.value.exit_code == 3


def _dangling(path: Path) -> None:
    path.symlink_to(path.parent / "nowhere")


ODD_ENTRIES = {"dangling symlink": _dangling, "FIFO": os.mkfifo, "directory": Path.mkdir}


def error_without_blocking(fifo: Path, function, *args) -> str:
    """The DataError message of `function(*args)`; the test fails if it blocks by opening the FIFO `fifo`."""
    outcome: list[str] = []

    def call() -> None:
        try:
            function(*args)
            outcome.append("no DataError")
        except DataError as e:
            outcome.append(str(e))

    worker = threading.Thread(target=call)
    worker.start()
    worker.join(10)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # gives the blocked reader an end of file
        worker.join()
        pytest.fail(f"opened the FIFO {fifo}")
    assert outcome, "raised something other than DataError"
    return outcome[0]


@pytest.mark.parametrize("source", ["auto", "idx"])
@pytest.mark.parametrize("kind", list(ODD_ENTRIES))
def test_odd_entry_in_place_of_a_file_is_named(tmp_path, no_tfds, kind, source):
    write_dataset(tmp_path)
    path = path_of(tmp_path, "test_labels", True)
    path.unlink()
    ODD_ENTRIES[kind](path)
    message = error_without_blocking(path, load_splits, idx_config(tmp_path, data_source=source))
    assert message.startswith(f"{path}: is a {kind}"), message


def test_read_idx_never_opens_a_fifo(tmp_path, monkeypatch):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    message = error_without_blocking(path, idx.read_idx, str(path), idx.LABELS_MAGIC)
    assert message == f"{path}: is a FIFO, not an IDX file"
    monkeypatch.setattr(idx, "_kind", lambda p: None)  # a FIFO put there after the check: still no wait
    message = error_without_blocking(path, idx.read_idx, str(path), idx.LABELS_MAGIC)
    assert message == f"{path}: is not a regular file (any more), not an IDX file"


def test_auto_still_uses_tfds_when_dir_holds_no_idx_name(tmp_path, monkeypatch):
    import mlp_research.data.tfds_source as tfds_source

    (tmp_path / "fashion_mnist" / "3.0.1").mkdir(parents=True)  # what a tfds data dir holds
    (tmp_path / "README").write_text("not an IDX file")
    monkeypatch.setattr(tfds_source, "load", lambda data_dir: write_dataset_arrays())
    assert load_arrays(idx_config(tmp_path, data_source="auto"))[2] == f"tfds:{tmp_path}"


def test_hold_out_of_every_training_example_names_val_fraction(tmp_path):
    write_dataset(tmp_path, n_train=1)
    with pytest.raises(ConfigError, match=r"^--val_fraction: 0.9 holds out all 1 training examples"):
        load_splits(idx_config(tmp_path, val_fraction=0.9))


def test_empty_tfds_split_is_a_data_error(monkeypatch):
    from mlp_research.data import tfds_source

    builder = types.SimpleNamespace(is_prepared=lambda: True, as_dataset=lambda split, **kwargs: [])
    fake = types.SimpleNamespace(builder=lambda name, data_dir: builder, as_numpy=lambda ds: ds)
    monkeypatch.setattr(tfds_source, "_import_tfds", lambda: fake)
    with pytest.raises(DataError, match="the train split of tfds 'fashion_mnist' in /x holds no examples"):
        tfds_source.load("/x")
