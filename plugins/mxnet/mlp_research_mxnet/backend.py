"""`MXNetBackend`: what the entry point `mxnet` names.

Importing this module imports no mxnet; `mlp_research_mxnet.framework.mxnet()`
does, the first time a backend method needs it (the trainer, in trainer.py).
"""

from __future__ import annotations

import importlib.metadata as md
from typing import TYPE_CHECKING

from mlp_research.backends.base import Backend
from mlp_research.config import Config
from mlp_research.data import Splits
from mlp_research.optimizers import SUPPORTED
from mlp_research_mxnet.framework import mxnet

if TYPE_CHECKING:
    from mlp_research_mxnet.trainer import MXNetTrainer


class MXNetBackend(Backend):
    name = "mxnet"
    # Declared capabilities: the driver refuses anything else with the flag named.
    optimizers = SUPPORTED  # every rule of mlp_research.optimizers, on mxnet arrays (optim.py)
    parallel_modes = ("auto", "none")  # one device
    matmul_precisions = ("default",)  # mxnet's own float32

    def version(self) -> str:
        try:
            return md.version("mxnet")
        except md.PackageNotFoundError:
            return mxnet().__version__

    def check(self, config: Config) -> None:
        """Nothing beyond the declarations above: every model, activation, init and schedule is supported."""

    def trainer(self, config: Config, splits: Splits) -> "MXNetTrainer":
        from mlp_research_mxnet.trainer import MXNetTrainer

        return MXNetTrainer(config, splits)
