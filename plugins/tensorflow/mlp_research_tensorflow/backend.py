"""`TensorFlowBackend`: what the entry point `tensorflow` names.

This module imports no TensorFlow, so the registry can load it to check a
config or list versions cheaply; the framework comes in with `version()` or
`trainer()`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlp_research.backends.base import Backend
from mlp_research.config import Config
from mlp_research.data import Splits
from mlp_research.optimizers import SUPPORTED

if TYPE_CHECKING:
    from mlp_research_tensorflow.trainer import TensorFlowTrainer


class TensorFlowBackend(Backend):
    """The d2l chapter's TensorFlow models, trained by `tf.function` chunks of steps."""

    name = "tensorflow"
    # Declared capabilities: the driver refuses anything else with the flag named.
    optimizers = SUPPORTED  # every rule of mlp_research.optimizers, in TensorFlow ops (optim.py)
    parallel_modes = ("auto", "none")  # one device
    matmul_precisions = ("default", "bfloat16")  # TensorFlow's own float32, or bfloat16 matmuls (models.py)

    def version(self) -> str:
        from mlp_research_tensorflow._tf import import_tensorflow

        return import_tensorflow().__version__

    def check(self, config: Config) -> None:
        """Nothing beyond the declarations above: every model, activation, init and schedule is supported."""

    def trainer(self, config: Config, splits: Splits) -> "TensorFlowTrainer":
        from mlp_research_tensorflow.trainer import TensorFlowTrainer

        return TensorFlowTrainer(config, splits)
