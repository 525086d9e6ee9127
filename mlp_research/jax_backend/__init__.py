"""The JAX/Flax backend: Flax models, pure step functions, device placements, optax optimisers.

Registered under the entry-point group `mlp_research.backends` like any plugin (`backend.JaxBackend`).
"""
