"""`TensorFlowBackend`: what the entry point `tensorflow` names.

This module imports no TensorFlow, so the registry can load it to check a
config or list versions cheaply; the framework comes in with `version()` or
`trainer()`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlp_research.backends.base import check_single_device
from mlp_research.config import Config
from mlp_research.data import Splits

if TYPE_CHECKING:
    from mlp_research_tensorflow.trainer import TensorFlowTrainer

# optax optimisers this backend mirrors in TensorFlow ops (see optim.py).
SUPPORTED_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad")


class TensorFlowBackend:
    """The d2l chapter's TensorFlow models, trained by `tf.function` chunks of steps."""

    name = "tensorflow"

    def version(self) -> str:
        from mlp_research_tensorflow._tf import import_tensorflow

        return import_tensorflow().__version__

    def check(self, config: Config) -> None:
        """Refuse, before any work, the options this backend does not run."""
        check_single_device(config, self.name, SUPPORTED_OPTIMIZERS)

    def trainer(self, config: Config, splits: Splits) -> "TensorFlowTrainer":
        self.check(config)
        from mlp_research_tensorflow.trainer import TensorFlowTrainer

        return TensorFlowTrainer(config, splits)
