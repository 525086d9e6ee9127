"""State trees without a framework: the kit reads `state_dict()` trees with these, not with `jax.tree_util`.

A backend for another framework should be checkable without JAX in the way. A state tree (base.py's
contract) is nested dicts with string keys, lists, tuples and named tuples, and dataclasses (a
framework's registered pytree classes are usually dataclasses: flax's `struct.dataclass`, whose
`pytree_node=False` fields are static and no leaves); `None` is an empty node. Everything else is a
leaf. Paths are written as `jax.tree_util.keystr` writes them (`['opt']['trace']['W1']`, `.step`,
`[0]`), so messages read the same for every backend.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np

from mlp_research.backends.base import is_static, tree_map


def _children(tree: Any) -> Iterator[tuple[str, Any]] | None:
    """(path step, child) of an inner node, in a fixed order; None for a leaf."""
    if isinstance(tree, dict):
        return ((f"[{key!r}]", tree[key]) for key in sorted(tree))
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return ((f".{name}", getattr(tree, name)) for name in tree._fields)
    if isinstance(tree, (list, tuple)):
        return ((f"[{i}]", child) for i, child in enumerate(tree))
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        return ((f".{f.name}", getattr(tree, f.name)) for f in dataclasses.fields(tree) if not is_static(f))
    if tree is None:
        return iter(())
    return None


def leaves(tree: Any, path: str = "") -> list[tuple[str, Any]]:
    """(path, leaf) of every leaf, depth first in a fixed order."""
    children = _children(tree)
    if children is None:
        return [(path, tree)]
    return [item for step, child in children for item in leaves(child, path + step)]


def copy(tree: Any) -> Any:
    """A deep copy whose leaves are numpy arrays: what a checkpoint hands back to `load_state_dict`."""
    return tree_map(lambda leaf: np.array(leaf, copy=True), tree)


def structure(tree: Any) -> list[tuple[str, tuple, str]]:
    """(path, shape, dtype) of every leaf: what `abstract_state_dict()` must agree on with `state_dict()`."""
    return [(path, tuple(np.shape(leaf)), str(np.asarray(leaf).dtype)) for path, leaf in leaves(tree)]


def first_difference(a: Any, b: Any) -> str:
    """'' if both trees hold the same leaves bit for bit, else what differs first."""
    left, right = leaves(a), leaves(b)
    if [path for path, _ in left] != [path for path, _ in right]:
        return f"its structure ({[p for p, _ in left]} vs {[p for p, _ in right]})"
    return next((f"its leaf {path}" for (path, x), (_, y) in zip(left, right)
                 if not np.array_equal(np.asarray(x), np.asarray(y))), "")
