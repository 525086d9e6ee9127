"""One experiment file per exercise question; `python -m experiments.report` runs them."""
