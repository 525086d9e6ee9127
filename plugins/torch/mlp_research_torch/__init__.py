"""PyTorch backend for mlp-research, registered under the entry-point group `mlp_research.backends`.

Importing this package imports no framework; torch is loaded when a trainer is built.
"""
