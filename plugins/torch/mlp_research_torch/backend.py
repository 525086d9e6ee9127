"""`TorchBackend`: the entry point `torch` of the group `mlp_research.backends`.

This module imports no torch: `check` needs none, and the trainer module (which
does) is imported when a run builds its trainer. A missing torch install still
fails at load time, so `experiments.backends` reports it against this package.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
from typing import TYPE_CHECKING

from mlp_research.backends.base import Backend
from mlp_research.config import Config
from mlp_research.data import Splits
from mlp_research.optimizers import SUPPORTED

if TYPE_CHECKING:
    from mlp_research_torch.trainer import TorchTrainer

if importlib.util.find_spec("torch") is None:
    raise ImportError("torch is not installed (pip install 'torch>=2.4,<=2.13.0')")


class TorchBackend(Backend):
    name = "torch"
    # Declared capabilities: the driver refuses anything else with the flag named.
    optimizers = SUPPORTED  # torch.optim where it computes optax's update, the shared rule elsewhere
    parallel_modes = ("auto", "none")  # one device
    matmul_precisions = ("default", "bfloat16")  # torch's own float32, or bfloat16 matmuls through torch.autocast

    def version(self) -> str:
        return md.version("torch")

    def check(self, config: Config) -> None:
        """Nothing beyond the declarations above: every model, activation, init and schedule is supported."""

    def trainer(self, config: Config, splits: Splits) -> "TorchTrainer":
        from mlp_research_torch.trainer import TorchTrainer

        return TorchTrainer(config, splits)
