"""`TorchBackend`: the entry point `torch` of the group `mlp_research.backends`.

This module imports no torch: `check` needs none, and the trainer module (which
does) is imported when a run builds its trainer. A missing torch install still
fails at load time, so `experiments.backends` reports it against this package.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util

from mlp_research.backends.base import Backend, Trainer
from mlp_research.config import Config
from mlp_research.data import Splits

if importlib.util.find_spec("torch") is None:
    raise ImportError("torch is not installed (pip install 'torch>=2.4,<=2.13.0')")


class TorchBackend(Backend):
    name = "torch"
    # Declared capabilities beyond the base's (every optimiser; one device): the driver refuses anything else.
    matmul_precisions = ("default", "bfloat16")  # torch's own float32, or bfloat16 matmuls through torch.autocast

    def version(self) -> str:
        return md.version("torch")

    def trainer(self, config: Config, splits: Splits) -> Trainer:
        from mlp_research_torch.trainer import TorchTrainer

        return TorchTrainer(config, splits)
