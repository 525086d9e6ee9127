"""Broken backends that exercise the conformance kit (`mlp_research.testing`) itself.

`broken`: the example backend (`mlp_research.testing.example_backend`, a
complete backend written the way a third party would, from
`mlp_research/backends/base.py` and docs/SPECIFICATION.md alone) with one
small, deliberate bug each; the kit must fail every one of them, naming what
is wrong.
"""
