"""absl entry points (`python -m experiments.train`, ...) and one config file per experiment."""
