"""The kit for backend authors: what a framework backend must compute, and how to check that it does.

- `docs/SPECIFICATION.md` states the mathematics once: network, activations,
  initialisation, loss, metric sums, data order, learning rate, optimisers.
- `reference`: that statement as plain numpy, no framework: initial
  parameters and their statistics, the forward pass, loss and gradients by
  explicit backpropagation, evaluation sums and whole training epochs in the
  shared data order. `tests/test_reference.py` compares it with the JAX core,
  so the statement cannot drift from the code.
- `kit`, `checks_model`, `checks_training`, `checks_run`: conformance cases
  that hold an installed backend against the reference and the backend
  contract (`mlp_research.backends.base`); `python -m
  mlp_research.testing.check_backend NAME` runs them.
- Shared with every backend rather than restated: `mlp_research.optimizers`
  (update rules), `mlp_research.schedules` (learning rates) and
  `mlp_research.batching` (data order).
"""
