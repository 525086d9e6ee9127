"""Reader for the IDX files of the original MNIST / Fashion-MNIST releases.

Format: two zero bytes, a type code (0x08 = uint8), the number of dimensions,
then one big-endian uint32 per dimension, then the data. Files may be gzipped.
Every check names the file, so a bad download is found at once; the header is
checked against the file's size before the body is read, so a wrong or huge
file is refused in milliseconds, without allocating what it claims to hold.
"""

from __future__ import annotations

import gzip
import math
import os
import stat
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
_KINDS = {IMAGES_MAGIC: "IDX images", LABELS_MAGIC: "IDX labels"}
IMAGE_SHAPE = (28, 28)
GZIP_MAGIC = b"\x1f\x8b"
_PROBE = 1 << 16  # compressed bytes read to find the IDX header of a gzipped file
# Deflate stores incompressible data with 5 bytes per 64 KiB block, so a gzip file needs little more than
# what it holds (plus its own header); and it cannot expand data more than 1032-fold.
_GZIP_SLACK = 1 << 16
_DEFLATE_MAX_RATIO = 1032


def _candidates(stem: str) -> tuple[str, ...]:
    return stem, stem + ".gz", stem.replace("-idx", ".idx")


def _kind(path: str) -> str | None:
    """None for a regular file (after symlinks), else what is there instead, in words."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        return "a dangling symlink" if os.path.islink(path) else f"unreadable ({e.strerror})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    return "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"


def find_files(data_dir: str, required: bool = True, origin: str = "--data_dir") -> dict[str, str] | None:
    """Paths of the four files (plain or .gz) in `data_dir` (given by `origin`, which messages name).

    With `required=False`, None when the directory holds none of their names (it
    may be a tfds data dir). Some but not all of them, or a name taken by a
    dangling symlink, a FIFO or a directory, is a DataError naming it either way:
    a half-copied data dir must not silently become a tfds download.
    """
    found: dict[str, str] = {}
    missing, odd = [], []
    for key, stem in FILES.items():
        present = [os.path.join(data_dir, c) for c in _candidates(stem) if os.path.lexists(os.path.join(data_dir, c))]
        regular = [p for p in present if _kind(p) is None]
        if regular:
            found[key] = regular[0]
        elif present:
            odd.append(present[0])
        else:
            missing.append(stem + "[.gz]")
    if not required and not found and not odd:
        return None
    if odd:
        raise DataError(f"{odd[0]}: is {_kind(odd[0])}, not the IDX file; put the file of the original "
                        "Fashion-MNIST release there (gzipped or not)")
    if missing:
        if not os.path.isdir(data_dir):
            raise DataError(f"{origin}: {data_dir} is not a directory holding the Fashion-MNIST IDX files")
        raise DataError(
            f"{origin}: {data_dir} lacks {', '.join(missing)}; put the four files of the original "
            "Fashion-MNIST release there (gzipped or not)"
        )
    return found


def _header(path: str, head: bytes, expected_magic: int, item_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    """The dimensions from the first bytes of the (decompressed) file, checked against what is expected."""
    if len(head) < 4:
        raise DataError(f"{path}: truncated (only {len(head)} bytes)")
    magic = int.from_bytes(head[:4], "big")
    if magic != expected_magic:
        found = _KINDS.get(magic, f"starts with {bytes(head[:4])!r}, not an IDX file")
        raise DataError(f"{path}: bad magic number {magic} ({found}), expected {expected_magic} "
                        f"({_KINDS[expected_magic]}); not an IDX file of this kind")
    ndim = head[3]
    if len(head) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated header: {len(head)} bytes, its {ndim} dimensions need {4 + 4 * ndim}")
    dims = tuple(int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if item_shape is not None and dims[1:] != item_shape:
        raise DataError(f"{path}: images are {dims[1:]}, expected {'x'.join(map(str, item_shape))}")
    return dims


def _size_error(path: str, dims: tuple[int, ...], body: int | None, cut: bool = False) -> DataError:
    expected = math.prod(dims)  # Python ints: a header of four 2**32-1 dimensions does not overflow
    if cut:
        where = f"after {body} of the {expected} bytes its header {dims} says" if body < expected else "before its end"
        return DataError(f"{path}: truncated: the gzip stream stops {where} (a download cut short?)")
    what = "truncated" if body is not None and body < expected else "has trailing bytes"
    holds = "more" if body is None else body
    return DataError(f"{path}: {what}: header says {dims} = {expected} bytes, file holds {holds}")


def _read_plain(path: str, f, expected_magic: int, item_shape: tuple[int, ...] | None) -> tuple[bytes, tuple]:
    size = os.fstat(f.fileno()).st_size
    dims = _header(path, f.read(min(size, 4 + 4 * 255)), expected_magic, item_shape)
    header = 4 + 4 * len(dims)
    if size - header != math.prod(dims):
        raise _size_error(path, dims, size - header)
    f.seek(header)
    body = f.read(math.prod(dims) + 1)
    if len(body) != math.prod(dims):  # the file changed between the check and the read
        raise _size_error(path, dims, len(body))
    return body, dims


def _gunzip(data: bytes, limit: int) -> tuple[bytes, str]:
    """At most `limit` bytes of the gzip members in `data` (one C call for a one-member file), and how the data
    end: "ok", "cut" (a stream without its end: a download cut short) or "trailing" (not gzip after the end)."""
    pieces, total, end = [], 0, "ok"
    while total < limit:
        inflater = zlib.decompressobj(31)
        pieces.append(inflater.decompress(data, limit - total))
        total += len(pieces[-1])
        if not inflater.eof:
            end = "ok" if total >= limit else "cut"
            break
        data = inflater.unused_data
        if not data.strip(b"\x00"):  # zero padding after the last member is allowed, as in gzip
            break
        if data[:2] != GZIP_MAGIC:
            end = "trailing"
            break
    return pieces[0] if len(pieces) == 1 else b"".join(pieces), end


def _read_gzip(path: str, f, expected_magic: int, item_shape: tuple[int, ...] | None) -> tuple[bytes, tuple]:
    size = os.fstat(f.fileno()).st_size
    probe = f.read(_PROBE)
    inflater = zlib.decompressobj(31)
    head = inflater.decompress(probe, 4)
    if len(head) == 4 and head[3]:  # (a max_length of 0 would mean no limit)
        head += inflater.decompress(inflater.unconsumed_tail, 4 * head[3])
    dims = _header(path, head, expected_magic, item_shape)
    header = 4 + 4 * len(dims)
    expected = math.prod(dims)
    needs = header + expected
    if size > needs + needs // 1000 + _GZIP_SLACK:
        raise DataError(f"{path}: {size} compressed bytes, far more than the {needs} bytes its header {dims} "
                        "says it holds could need; not this IDX file")
    if needs > size * _DEFLATE_MAX_RATIO:
        raise DataError(f"{path}: truncated: header says {dims} = {expected} bytes, more than a {size}-byte gzip "
                        "file can hold")
    f.seek(0)
    data, end = _gunzip(f.read(size + 1), needs + 1)
    if end == "cut":
        raise _size_error(path, dims, len(data) - header, cut=True)
    if end == "trailing" or len(data) != needs:
        raise _size_error(path, dims, None if end == "trailing" or len(data) > needs else len(data) - header)
    return data, dims


def read_idx(path: str, expected_magic: int, item_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Read one IDX file as a uint8 array, validating magic number, `item_shape` (the dimensions after the
    first) and length before its body is read or decompressed."""
    kind = _kind(path)
    if kind is not None:  # never open a FIFO: it would block
        raise DataError(f"{path}: is {kind}, not an IDX file")
    try:
        # Non-blocking, so that a FIFO put there since the check is refused below rather than waited on.
        with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise DataError(f"{path}: is not a regular file (any more), not an IDX file")
            gzipped = f.read(2) == GZIP_MAGIC
            f.seek(0)
            data, dims = (_read_gzip if gzipped else _read_plain)(path, f, expected_magic, item_shape)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    return np.frombuffer(data, dtype=np.uint8, offset=len(data) - math.prod(dims)).reshape(dims)


def load_dir(data_dir: str, origin: str = "--data_dir") -> tuple[tuple[np.ndarray, np.ndarray],
                                                                  tuple[np.ndarray, np.ndarray]]:
    """(train_images, train_labels), (test_images, test_labels) as uint8 arrays."""
    paths = find_files(data_dir, origin=origin)
    assert paths is not None
    arrays = {}
    for key, path in paths.items():
        images = key.endswith("images")
        arrays[key] = read_idx(path, IMAGES_MAGIC if images else LABELS_MAGIC, IMAGE_SHAPE if images else ())
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise DataError(
                f"{paths[split + '_labels']}: {len(labels)} labels but {paths[split + '_images']} "
                f"holds {len(images)} images"
            )
        if not len(images):  # caught here, not as a division by zero or a --batch_size complaint later
            raise DataError(f"{paths[split + '_images']}: holds no examples (header says {images.shape}); "
                            f"the {split} split needs at least one")
        if labels.max() > 9:
            at = int(np.argmax(labels > 9))
            raise DataError(f"{paths[split + '_labels']}: label {labels[at]} (at index {at}) outside 0..9")
    return (arrays["train_images"], arrays["train_labels"]), (arrays["test_images"], arrays["test_labels"])


def write_idx(path: str, array: np.ndarray, compress: bool | None = None) -> None:
    """Write a uint8 array as an IDX file (gzipped if `path` ends in .gz); for tests and tools."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    compress = path.endswith(".gz") if compress is None else compress
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())
