"""Checksums of a checkpoint's arrays, so that damaged or swapped data is never restored silently.

Orbax stores the arrays in TensorStore chunks that carry no checksum: a flipped
bit in a data file, or an item copied in from another run, restores without
complaint. `manifest` hashes every array leaf of an item (SHA-256 of its dtype,
shape and bytes, keyed by its path in the tree); the manifests of `state` and
`canonical` are stored in the checkpoint's `meta`, which also holds the config
and position, so the three items are bound to one another. `verify` recomputes
the manifest of what was restored and names the first array that differs.
`array_shapes` and `without_empty` compare a stored tree's arrays with a restore
target's, for checkpoints saved in an older layout.

Framework-neutral: trees are walked with `jax.tree_util` (Orbax, which wrote
them, has imported JAX already), leaves are read as numpy arrays.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np


class ChecksumMismatch(ValueError):
    """A restored array is not the array that was saved (corrupt data, or an item from another checkpoint)."""


def array_digest(value: Any) -> str:
    """SHA-256 of an array's dtype, shape and bytes (hex)."""
    array = np.ascontiguousarray(np.asarray(value))
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def manifest(tree: Any) -> dict[str, str]:
    """{path: digest} for every array leaf of `tree` (a path as `jax.tree_util.keystr` writes it)."""
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): array_digest(leaf) for path, leaf in leaves}


def verify(item: str, tree: Any, expected: dict[str, str]) -> None:
    """Raise `ChecksumMismatch` naming the first array of `tree` whose digest is not `expected`'s."""
    found = manifest(tree)
    for path in sorted(set(found) | set(expected)):
        if found.get(path) != expected.get(path):
            what = "is missing" if path not in found else "was not saved" if path not in expected else \
                "does not match the checksum saved with it"
            raise ChecksumMismatch(f"{item}{path} {what} (corrupt data, or an item from another checkpoint)")


def without_empty(tree: Any) -> Any:
    """`tree` without the sub-trees that hold no array (None placeholders, empty lists and dicts)."""
    if isinstance(tree, dict):
        kept = {k: without_empty(v) for k, v in tree.items()}
        return {k: v for k, v in kept.items() if v is not None}
    if isinstance(tree, (list, tuple)):
        kept = [without_empty(v) for v in tree]
        kept = [v for v in kept if v is not None]
        return kept or None
    return tree


def array_shapes(tree: Any, prefix: str = "") -> dict[str, tuple]:
    """Every array leaf's path with its shape and dtype: the structure two state trees must share."""
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in array_shapes(value, f"{prefix}/{key}").items()}
    if hasattr(tree, "_fields") or isinstance(tree, (list, tuple)):
        return {k: v for i, value in enumerate(tree) for k, v in array_shapes(value, f"{prefix}/{i}").items()}
    array = np.asarray(tree)
    return {prefix: (array.shape, str(array.dtype))}
