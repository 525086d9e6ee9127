"""mlp-research: multilayer-perceptron experiments on Fashion-MNIST, JAX first, any framework through plugins.

Packages, in the direction imports run:
- `run`: the framework-neutral driver (one loop for single runs and vmapped groups), metrics, checkpoints,
  signals, the work directory. It imports no JAX at module level and never asks which backend it drives.
- `backends`: the interface a framework implements (`base`) and the entry-point registry (`registry`).
- `jax_backend`: the JAX/Flax implementation of that interface (models, pure step functions, placements).
- shared by all of them: `config`, `spec`, `data`, `batching`, `schedules`, `optimizers`, `errors`, `files`.
"""
