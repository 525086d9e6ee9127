"""Backends and checks that exercise the conformance kit (`mlp_research.testing`) itself.

- `numpy_backend`: a complete backend written the way a third party would,
  from `mlp_research/backends/base.py` and docs/SPECIFICATION.md alone. It
  shares nothing with the reference it is checked against, so the kit passing
  it says something about the kit.
- `broken`: the same backend with one small, deliberate bug each; the kit
  must fail every one of them, naming what is wrong.
  (they carry what the shipped plugins' removed contract tests checked).
"""
