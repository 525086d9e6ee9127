"""mxnet backend plugin for mlp-research (registered under the entry-point group `mlp_research.backends`)."""
