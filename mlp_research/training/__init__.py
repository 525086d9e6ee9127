"""Training: pure step functions (`step.py`), optimisers by name (`optim.py`),
metric rows and writers (`metrics.py`) and the run driver (`loop.py`)."""
