"""Reading a compiled program's matmuls (`mlp_research.jax_backend.hlo`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from mlp_research.jax_backend import hlo

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the expected forms are XLA:CPU's")


def _dots(fn, *args) -> list[hlo.Dot]:
    return hlo.find_dots(jax.jit(fn).lower(*args).compile().as_text())


def test_a_plain_product_is_found_with_its_shapes_types_and_library():
    a, b = jnp.ones((128, 96), jnp.bfloat16), jnp.ones((96, 64), jnp.bfloat16)
    (dot,) = _dots(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32), a, b)
    assert dot.m_k_n == (128, 96, 64)
    assert (dot.lhs.dtype, dot.rhs.dtype, dot.out.dtype) == ("bf16", "bf16", "f32")
    assert dot.standard_form and dot.library == "__ynn_fusion"


def test_a_transposed_operand_is_seen_as_the_slow_form():
    """x.T @ g: XLA:CPU contracts the batch axis of both operands (Eigen, in float32), never a library kernel."""
    x, g = jnp.ones((128, 96), jnp.bfloat16), jnp.ones((128, 64), jnp.bfloat16)
    (dot,) = _dots(lambda x, g: jnp.dot(x.T, g, preferred_element_type=jnp.float32), x, g)
    assert not dot.standard_form
    assert dot.lhs.dtype == "f32" and dot.library is None  # upcast: the bfloat16 kernel never runs
    assert hlo.large_dots(jax.jit(lambda x, g: x.T @ g).lower(x, g).compile().as_text(), min_dim=200) == []
