"""The kit for backend authors: what a framework backend must compute, and how to check that it does.

- `docs/SPECIFICATION.md` states the mathematics once: network, activations,
  initialisation, loss, metric sums, data order, learning rate, optimisers.
- `reference`: that statement as plain numpy, no framework: initial
  parameters and their statistics, the forward pass, loss and gradients by
  explicit backpropagation, evaluation sums and whole training epochs in the
  shared data order. `tests/test_reference.py` compares it with the JAX core,
  so the statement cannot drift from the code.
- `kit` assembles the conformance cases of the `checks_*` modules (model,
  training, extra, settings, group, run), built from `core` (`Case`, `Outcome`,
  `Kit`) and `trees` (state trees without JAX); they hold an installed backend
  against the reference and the backend contract (`mlp_research.backends.base`),
  and `python -m mlp_research.testing.check_backend NAME` runs them.
- `example_backend`: a complete backend in numpy written from the documents
  alone, protocols only; it passes the kit.
- Shared with every backend rather than restated: `mlp_research.optimizers`
  (update rules), `mlp_research.schedules` (learning rates) and
  `mlp_research.batching` (data order).
"""
