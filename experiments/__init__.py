"""absl entry points (`python -m experiments.train`, ...) and one config file per experiment.

Importing this package is the first thing every entry point does, so SIGTERM and SIGINT are caught from
here on: a stop request at any moment of a run ends it cleanly (`mlp_research.run.signals`).
"""

from mlp_research.run import signals as _signals

_signals.install()
