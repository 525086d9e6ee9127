"""`TorchBackend`: the entry point `torch` of the group `mlp_research.backends`.

This module imports no torch: `check` needs none, and the trainer module (which
does) is imported when a run builds its trainer. A missing torch install still
fails at load time, so `experiments.backends` reports it against this package.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
from typing import TYPE_CHECKING

from mlp_research.config import Config
from mlp_research.data import Splits
from mlp_research.errors import ConfigError

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
        if config.parallel not in ("auto", "none"):
            raise ConfigError(
                f"--parallel: the torch backend trains on one device; {config.parallel!r} is JAX-only "
                "(use auto or none)"
            )
        if config.optimizer not in SUPPORTED_OPTIMIZERS:
            raise ConfigError(
                f"--optimizer: {config.optimizer!r} is not in torch.optim; the torch backend supports "
                f"{', '.join(SUPPORTED_OPTIMIZERS)}"
            )

    def trainer(self, config: Config, splits: Splits) -> "TorchTrainer":
        self.check(config)
        from mlp_research_torch.trainer import TorchTrainer

        return TorchTrainer(config, splits)
