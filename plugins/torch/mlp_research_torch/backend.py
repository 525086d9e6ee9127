"""`TorchBackend`: the entry point `torch` of the group `mlp_research.backends`.

This module imports no torch: `check` needs none, and the trainer module (which
does) is imported when a run builds its trainer. A missing torch install still
fails at load time, so `experiments.backends` reports it against this package.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
from typing import TYPE_CHECKING

from mlp_research.backends.base import check_single_device
from mlp_research.config import Config
from mlp_research.data import Splits

if TYPE_CHECKING:
    from mlp_research_torch.trainer import TorchTrainer

if importlib.util.find_spec("torch") is None:
    raise ImportError("torch is not installed (pip install 'torch>=2.4,<=2.13.0')")

SUPPORTED_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad")


class TorchBackend:
    name = "torch"

    def version(self) -> str:
        return md.version("torch")

    def check(self, config: Config) -> None:
        """Refuse what torch cannot mirror: multi-device placements and LAMB."""
        check_single_device(config, self.name, SUPPORTED_OPTIMIZERS)

    def trainer(self, config: Config, splits: Splits) -> "TorchTrainer":
        self.check(config)
        from mlp_research_torch.trainer import TorchTrainer

        return TorchTrainer(config, splits)
