"""The tiny search with trials long enough to disturb in their middle (a database restart, a kill)."""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location("tiny_space", os.path.join(os.path.dirname(__file__), "tiny.py"))
_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tiny)


def get_space() -> dict:
    space = _tiny.get_space()
    space["fixed"].update(max_epochs=25, synthetic_train_size=3000)
    space["pruner"] = dict(name="none")
    return space
