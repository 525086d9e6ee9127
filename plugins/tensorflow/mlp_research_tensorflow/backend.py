"""`TensorFlowBackend`: what the entry point `tensorflow` names.

This module imports no TensorFlow, so the registry can load it to check a
config or list versions cheaply; the framework comes in with `version()` or
`trainer()`.
"""

from __future__ import annotations

from mlp_research.backends.base import Backend, Trainer
from mlp_research.config import Config
from mlp_research.data import Splits


class TensorFlowBackend(Backend):
    """The d2l chapter's TensorFlow models, trained by `tf.function` chunks of steps."""

    name = "tensorflow"
    # Declared capabilities beyond the base's (every optimiser; one device): the driver refuses anything else.
    matmul_precisions = ("default", "bfloat16")  # TensorFlow's own float32, or bfloat16 matmuls (models.py)

    def version(self) -> str:
        from mlp_research_tensorflow._tf import tf

        return tf.__version__

    def trainer(self, config: Config, splits: Splits) -> Trainer:
        from mlp_research_tensorflow.trainer import TensorFlowTrainer

        return TensorFlowTrainer(config, splits)
