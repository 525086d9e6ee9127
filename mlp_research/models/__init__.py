"""JAX/Flax models built from a `ModelSpec`, and the canonical parameter layout."""

from mlp_research.models.flax_mlp import MLP, MLPScratch, build_model, from_canonical, to_canonical

__all__ = ["MLP", "MLPScratch", "build_model", "from_canonical", "to_canonical"]
