"""`MXNetBackend`: what the entry point `mxnet` names.

Importing this module imports no mxnet; `mlp_research_mxnet.framework.mxnet()`
does, the first time a backend method needs it (the trainer, in trainer.py).
"""

from __future__ import annotations

import importlib.metadata as md

from mlp_research.backends.base import Backend, Trainer
from mlp_research.config import Config
from mlp_research.data import Splits


class MXNetBackend(Backend):
    name = "mxnet"
    # The base's declarations: every optimiser (optim.py), one device, mxnet's own float32 matmuls.

    def version(self) -> str:
        return md.version("mxnet")

    def trainer(self, config: Config, splits: Splits) -> Trainer:
        from mlp_research_mxnet.trainer import MXNetTrainer

        return MXNetTrainer(config, splits)
