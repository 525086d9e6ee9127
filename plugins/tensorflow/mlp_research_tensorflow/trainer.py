"""`TensorFlowTrainer`: one run's model, optimiser state and resident data in TensorFlow.

The training set stays in memory as tensors; each call of `train_chunk` is one
`tf.function` that loops over the chunk's steps in-graph (a `tf.range` loop,
i.e. a `tf.while_loop`), gathering each batch with `tf.gather` from the epoch
order of `mlp_research.batching`, compiled by XLA (`jit_compile=True`, the
fastest of the plain TensorFlow loops measured in benchmarks/plain_loops.py on CPU). XLA needs one batch shape, so
the short last batch of an epoch is padded and its padding weighted 0: its
loss is still the mean over its own examples. Each step's loss sum and correct
count go into a `tf.TensorArray` the chunk returns; the base class adds them up
when the driver asks for the epoch's sums, so nothing syncs with the host before.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from mlp_research.backends.base import Trainer
from mlp_research.config import Config
from mlp_research.data import Splits
from mlp_research_tensorflow._tf import tf
from mlp_research_tensorflow.models import build_model
from mlp_research_tensorflow.optim import Optimizer

IMAGE_SPEC = tf.TensorSpec([None, 28, 28], tf.float32)
LABEL_SPEC = tf.TensorSpec([None], tf.int32)


def batch_sums(logits: Any, y: Any, weights: Any = None) -> tuple[Any, Any]:
    """(sum of softmax cross-entropy, number correct) over a batch; rows of weight 0 do not count."""
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
    hits = tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), y), tf.float32)
    if weights is not None:
        losses, hits = losses * weights, hits * weights
    return tf.reduce_sum(losses), tf.cast(tf.reduce_sum(hits), tf.int32)


class TensorFlowTrainer(Trainer):
    """Model, optimiser slots and data of one run; the step loop is traced once."""

    def __init__(self, config: Config, splits: Splits):
        super().__init__(config, splits)
        self.names = list(config.canonical_shapes())
        device = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        self.device = device[0]
        with tf.device(self.device.name):
            self.model = build_model(config.spec, config.seed, config.matmul_precision)
            self.params: list[Any] = self.model.variables
            self.optimizer = Optimizer(config, self.layout.steps_per_epoch, self.params, self.names)
            self.counter = tf.Variable(0, dtype=tf.int32, trainable=False, name="step")  # the in-graph self.step
            self.train_x = tf.constant(splits.train.images, tf.float32)
            self.train_y = tf.constant(splits.train.labels, tf.int32)
        self.keep_eval_split(splits)
        self.start_epoch(0)
        t0 = time.perf_counter()
        order_spec = tf.TensorSpec([self.layout.order_length], tf.int32)
        self._train = tf.function(self._train_graph, jit_compile=True, input_signature=[
            IMAGE_SPEC, LABEL_SPEC, order_spec, tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)])
        self._eval = tf.function(lambda x, y: batch_sums(self.model(x), y), input_signature=[IMAGE_SPEC, LABEL_SPEC])
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
    def _train_graph(self, images: Any, labels: Any, order: Any, first: Any, last: Any) -> tuple[Any, Any]:
        """Steps [first, last) of the epoch in one graph; each step's (loss sum, correct)."""
        batch = self.layout.batch_size
        losses = tf.TensorArray(tf.float32, size=last - first)
        hits = tf.TensorArray(tf.int32, size=last - first)
        for s in tf.range(first, last):
            start = s * batch
            idx = tf.slice(order, [start], [batch])  # -1 marks the padding of a short batch
            weights = tf.cast(idx >= 0, tf.float32)
            idx = tf.maximum(idx, 0)
            x, y = tf.gather(images, idx), tf.gather(labels, idx)
            with tf.GradientTape() as tape:
                batch_loss, batch_correct = batch_sums(self.model(x), y, weights)
                loss = batch_loss / tf.reduce_sum(weights)
            grads = tape.gradient(loss, self.params)
            self.optimizer.apply(grads, self.params, self.counter.read_value())
            self.counter.assign_add(1)
            losses = losses.write(s - first, batch_loss)
            hits = hits.write(s - first, batch_correct)
        return losses.stack(), hits.stack()

    # ------------------------------------------------------------ training
    def _start_epoch(self, epoch: int, order: np.ndarray) -> None:
        self.order = tf.constant(order)

    def _train_steps(self, first: int, end: int) -> tuple[Any, Any]:
        return self._train(self.train_x, self.train_y, self.order, tf.constant(first, tf.int32),
                           tf.constant(end, tf.int32))

    def _fetch(self, values: list[Any]) -> list[np.ndarray]:
        return [np.asarray(v.numpy()) for v in values]

    def _put_batch(self, images: np.ndarray, labels: np.ndarray) -> tuple[Any, Any]:
        with tf.device(self.device.name):
            return tf.constant(images, tf.float32), tf.constant(labels, tf.int32)

    def _evaluate_batch(self, x: Any, y: Any) -> tuple[Any, Any]:
        return self._eval(x, y)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """The model's outputs with the current parameters (the backend kit's parity checks)."""
        with tf.device(self.device.name):
            return self.model(tf.constant(images, tf.float32)).numpy()

    # --------------------------------------------------------------- state
    def _framework_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
        """Parameters are already canonical ({W1, b1, ...}); slots {slot: {W1, ...}} (None for plain SGD)."""
        return self._get_canonical(), self.optimizer.state() if self.optimizer.slots else None

    def _load_framework_state(self, params: dict[str, Any], opt_state: dict[str, Any] | None) -> None:
        self.counter.assign(self.step)
        self._set_canonical(params)
        self.optimizer.load(opt_state)  # no slots, nothing read, for plain SGD

    def _get_canonical(self) -> dict[str, np.ndarray]:
        return {n: np.asarray(v.numpy(), np.float32) for n, v in zip(self.names, self.params)}

    def _set_canonical(self, params: dict[str, np.ndarray]) -> None:
        for n, v in zip(self.names, self.params):
            v.assign(np.asarray(params[n], np.float32))
