"""TensorFlow backend for mlp-research, registered under the entry-point group `mlp_research.backends`.

Importing this package imports no TensorFlow: `backend.TensorFlowBackend` does so
only when a version or a trainer is asked for, so listing backends stays cheap.
"""
