"""`TensorFlowTrainer`: one run's model, optimiser state and resident data in TensorFlow.

The training set stays in memory as tensors; each call of `train_chunk` is one
`tf.function` that loops over the chunk's steps in-graph (a `tf.range` loop,
i.e. a `tf.while_loop`), gathering each batch with `tf.gather` from the epoch
order of `mlp_research.batching`, compiled by XLA (`jit_compile=True`, the
fastest of the plain TensorFlow loops measured in benchmarks/plain_loops.py on CPU). XLA needs one batch shape, so
the short last batch of an epoch is padded and its padding weighted 0: its
loss is still the mean over its own examples. Metric sums are loop carries
added to `tf.Variable`s: nothing syncs with the host until `epoch_sums()`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from mlp_research import batching
from mlp_research.backends.base import Sums
from mlp_research.config import Config
from mlp_research.data import Splits
from mlp_research.optimizers import STATE_SLOTS
from mlp_research_tensorflow._tf import import_tensorflow
from mlp_research_tensorflow.models import build_model
from mlp_research_tensorflow.optim import Optimizer

tf = import_tensorflow()

IMAGE_SPEC = tf.TensorSpec([None, 28, 28], tf.float32)
LABEL_SPEC = tf.TensorSpec([None], tf.int32)


def batch_sums(logits: Any, y: Any, weights: Any = None) -> tuple[Any, Any]:
    """(sum of softmax cross-entropy, number correct) over a batch; rows of weight 0 do not count."""
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
    hits = tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), y), tf.float32)
    if weights is not None:
        losses, hits = losses * weights, hits * weights
    return tf.reduce_sum(losses), tf.cast(tf.reduce_sum(hits), tf.int32)


class TensorFlowTrainer:
    """Model, optimiser slots and data of one run; the step loop is traced once."""

    def __init__(self, config: Config, splits: Splits, jit_compile: bool = True):
        self.config = config
        self.layout = batching.make_layout(len(splits.train), config.batch_size, config.steps_per_chunk)
        self.names = list(config.model.canonical_shapes())
        device = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        self.device = device[0]
        with tf.device(self.device.name):
            self.model = build_model(config.model, config.seed)
            self.params: list[Any] = self.model.variables
            self.optimizer = Optimizer(config, self.layout.steps_per_epoch, self.params, self.names)
            self.step = tf.Variable(0, dtype=tf.int32, trainable=False, name="step")
            self.loss_sum = tf.Variable(0.0, dtype=tf.float32, trainable=False)
            self.correct = tf.Variable(0, dtype=tf.int32, trainable=False)
            self.count = tf.Variable(0, dtype=tf.int32, trainable=False)
            self.first_nonfinite = tf.Variable(-1, dtype=tf.int32, trainable=False)
            self.train_x = tf.constant(splits.train.images, tf.float32)
            self.train_y = tf.constant(splits.train.labels, tf.int32)
            self.eval_x = tf.constant(splits.eval.images, tf.float32)
            self.eval_y = tf.constant(splits.eval.labels, tf.int32)
        self.order = tf.constant(batching.epoch_order(config.seed, 0, self.layout))
        self.eval_batch = max(min(config.eval_batch_size, len(splits.eval)), 1)

        t0 = time.perf_counter()
        order_spec = tf.TensorSpec([self.layout.order_length], tf.int32)
        self._train = tf.function(self._train_chunk, jit_compile=jit_compile, input_signature=[
            IMAGE_SPEC, LABEL_SPEC, order_spec, tf.TensorSpec([], tf.int32)])
        self._eval = tf.function(self._evaluate, input_signature=[IMAGE_SPEC, LABEL_SPEC])
        # Traced ahead, so tracing time is reported apart from the first epoch.
        self._train.get_concrete_function()
        self._eval.get_concrete_function()
        self.compile_seconds = time.perf_counter() - t0

    def describe(self) -> dict[str, Any]:
        kind = self.device.device_type
        if kind == "GPU":
            details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
            kind = details.get("device_name", "GPU")
        return {"parallel": "none", "num_devices": 1, "device": kind, "platform": self.device.device_type.lower()}

    # ------------------------------------------------------------ compiled
    def _train_chunk(self, images: Any, labels: Any, order: Any, chunk: Any) -> None:
        """Steps [chunk*K, min((chunk+1)*K, steps_per_epoch)) of the epoch, in one graph."""
        layout = self.layout
        first = chunk * layout.steps_per_chunk
        last = tf.minimum(first + layout.steps_per_chunk, layout.steps_per_epoch)
        loss_sum, correct, count = self.loss_sum.read_value(), self.correct.read_value(), self.count.read_value()
        first_bad = self.first_nonfinite.read_value()
        batch = layout.batch_size
        for s in tf.range(first, last):
            start = s * batch
            idx = tf.slice(order, [start], [batch])  # the order is padded to whole chunks
            weights = tf.cast(start + tf.range(batch) < layout.num_train, tf.float32)
            size = tf.cast(tf.reduce_sum(weights), tf.int32)
            x, y = tf.gather(images, idx), tf.gather(labels, idx)
            with tf.GradientTape() as tape:
                logits = self.model(x)
                batch_loss, batch_correct = batch_sums(logits, y, weights)
                loss = batch_loss / tf.reduce_sum(weights)
            grads = tape.gradient(loss, self.params)
            step = self.step.read_value()
            self.optimizer.apply(grads, self.params, step)
            self.step.assign_add(1)
            bad = tf.logical_not(tf.math.is_finite(batch_loss))
            first_bad = tf.where(tf.logical_and(first_bad < 0, bad), step, first_bad)
            loss_sum += batch_loss
            correct += batch_correct
            count += size
        self.loss_sum.assign(loss_sum)
        self.correct.assign(correct)
        self.count.assign(count)
        self.first_nonfinite.assign(first_bad)

    def _evaluate(self, images: Any, labels: Any) -> tuple[Any, Any, Any]:
        """(loss sum, correct, count) over every example, in batches of eval_batch."""
        n = tf.shape(labels)[0]
        loss_sum, correct = tf.constant(0.0), tf.constant(0)
        for start in tf.range(0, n, self.eval_batch):
            x, y = images[start:start + self.eval_batch], labels[start:start + self.eval_batch]
            batch_loss, batch_correct = batch_sums(self.model(x), y)
            loss_sum += batch_loss
            correct += batch_correct
        return loss_sum, correct, n

    # ------------------------------------------------------------ training
    def start_epoch(self, epoch: int, sums: Sums | None = None) -> None:
        self.order = tf.constant(batching.epoch_order(self.config.seed, epoch, self.layout))
        sums = sums or Sums(0.0, 0, 0)
        self.loss_sum.assign(np.float32(sums.loss_sum))
        self.correct.assign(sums.correct)
        self.count.assign(sums.count)
        self.first_nonfinite.assign(sums.first_nonfinite_step)

    def train_chunk(self, chunk: int) -> None:
        self._train(self.train_x, self.train_y, self.order, tf.constant(chunk, tf.int32))

    def epoch_sums(self) -> Sums:
        return Sums(float(self.loss_sum.numpy()), int(self.correct.numpy()), int(self.count.numpy()),
                    int(self.first_nonfinite.numpy()))

    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> Sums:
        with tf.device(self.device.name):
            x, y = tf.constant(images, tf.float32), tf.constant(labels, tf.int32)
        return self._sums(*self._eval(x, y))

    def logits(self, images: np.ndarray) -> np.ndarray:
        """The model's outputs with the current parameters (the backend kit's parity checks)."""
        with tf.device(self.device.name):
            return self.model(tf.constant(images, tf.float32)).numpy()

    def evaluate_eval_split(self) -> Sums:
        return self._sums(*self._eval(self.eval_x, self.eval_y))

    @staticmethod
    def _sums(loss_sum: Any, correct: Any, count: Any) -> Sums:
        return Sums(float(loss_sum.numpy()), int(correct.numpy()), int(count.numpy()))

    # --------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """{"step", "params": {W1, b1, ...}, "opt_state": {slot: {W1, ...}}} as numpy arrays.

        "opt_state" is left out for plain SGD, which keeps none (an empty subtree
        would not survive a checkpoint).
        """
        state: dict[str, Any] = {"step": np.asarray(self.step.numpy(), np.int32), "params": self.get_params()}
        if self.optimizer.slots:
            state["opt_state"] = self.optimizer.state()
        return state

    def abstract_state_dict(self) -> dict[str, Any]:
        shapes = self.config.model.canonical_shapes()
        zeros = {n: np.zeros(shape, np.float32) for n, shape in shapes.items()}
        state: dict[str, Any] = {"step": np.zeros((), np.int32), "params": dict(zeros)}
        slots = STATE_SLOTS[self.config.optimizer]
        if slots:
            state["opt_state"] = {slot: dict(zeros) for slot in slots}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step.assign(np.asarray(state["step"], np.int32))
        self.set_params(state["params"])
        if self.optimizer.slots:
            self.optimizer.load(state["opt_state"])

    def get_params(self) -> dict[str, np.ndarray]:
        return {n: np.asarray(v.numpy(), np.float32) for n, v in zip(self.names, self.params)}

    def set_params(self, params: dict[str, np.ndarray]) -> None:
        shapes = self.config.model.canonical_shapes()
        for n, v in zip(self.names, self.params):
            if n not in params:
                raise ValueError(f"canonical parameters lack {n}")
            if tuple(np.shape(params[n])) != shapes[n]:
                raise ValueError(f"canonical {n} has shape {tuple(np.shape(params[n]))}, spec needs {shapes[n]}")
            v.assign(np.asarray(params[n], np.float32))
