"""`MXNetTrainer`: both of the book's models trained with resident arrays and autograd.

The training and evaluation data are mxnet arrays from the start; each step
gathers its batch with the shared epoch order, records the forward pass,
keeps its loss and accuracy sums as device scalars (no sync) and updates the
parameters in place with the shared optimiser rules. Epoch sums, the state
layout, parameter checks and evaluation batching are the base class's.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from mlp_research import batching
from mlp_research.backends.base import Trainer
from mlp_research.config import Config
from mlp_research.data import Splits
from mlp_research_mxnet import optim
from mlp_research_mxnet.framework import mxnet
from mlp_research_mxnet.models import build_model


class MXNetTrainer(Trainer):
    """Model, optimiser state and resident data of one run."""

    def __init__(self, config: Config, splits: Splits):
        super().__init__(config, splits)
        mx = mxnet()
        self.mx, self.np = mx, mx.np
        t0 = time.perf_counter()
        mx.random.seed(config.seed)
        self.model = build_model(config.spec)
        self.optimizer = optim.Optimizer(config, self.layout.steps_per_epoch)
        self.params = self.model.state_params()
        self.grads = self.model.grads()  # gradient buffers: written in place by every backward
        self.opt_state = self.optimizer.init_state(self.params, self.np)
        self.train_x = self._images(splits.train.images)
        # int64 labels compare with argmax's int64 output without a cast.
        self.train_y = self.np.array(splits.train.labels, dtype=np.int64)
        self.keep_eval_split(splits)
        self.start_epoch(0)
        self._warm_up()
        self.compile_seconds = time.perf_counter() - t0

    # ------------------------------------------------------------ helpers
    def _images(self, images: np.ndarray) -> Any:
        return self.np.array(np.asarray(images, np.float32).reshape(len(images), -1))

    def _put_batch(self, images: np.ndarray, labels: np.ndarray) -> tuple[Any, Any]:
        return self._images(images), self.np.array(labels, dtype=np.int64)

    def _per_example_loss(self, logits: Any, y: Any) -> Any:
        """Softmax cross-entropy on integer labels (gluon's SoftmaxCrossEntropyLoss: log_softmax, pick)."""
        return -self.mx.npx.pick(self.mx.npx.log_softmax(logits, axis=-1), y, axis=-1)

    def _correct(self, logits: Any, y: Any) -> Any:
        return self.np.argmax(logits, axis=-1) == y

    def _warm_up(self) -> None:
        """Build the hybridized graphs (train and eval shapes) once, so epoch times exclude it.

        Runs forward and backward on the first batch without any update: gradients
        are overwritten by the next backward, so the state is unchanged.
        """
        idx = self.order[: self.layout.batch_size]
        x, y = self.np.take(self.train_x, idx, axis=0), self.np.take(self.train_y, idx, axis=0)
        with self.mx.autograd.record():
            loss = self._per_example_loss(self.model(x), y).mean()
        loss.backward()
        for x, _ in self._eval_split[:1] + self._eval_split[-1:]:
            self.model(x)
        self.mx.npx.waitall()

    def describe(self) -> dict[str, Any]:
        return {"parallel": "none", "num_devices": 1, "device": "cpu", "platform": "cpu",
                "hybridized": self.config.model == "mlp"}

    # ----------------------------------------------------------- training
    def _start_epoch(self, epoch: int, order: np.ndarray) -> None:
        # Padding (-1) gathers example 0 and is cut away after the forward pass (hybridized: one batch shape).
        self.order = self.np.array(np.maximum(order, 0), dtype=np.int32)
        self.counts = batching.step_counts(order, self.layout).tolist()

    def _train_steps(self, first: int, end: int) -> tuple[Any, Any]:
        layout, np_, autograd = self.layout, self.np, self.mx.autograd
        losses, hits = [], []
        for s in range(first, end):
            start = s * layout.batch_size
            idx = self.order[start:start + layout.batch_size]
            x, y = np_.take(self.train_x, idx, axis=0), np_.take(self.train_y, idx, axis=0)
            count = self.counts[s]  # the padding rows come last: the loss is the mean over the real examples
            with autograd.record():
                logits = self.model(x)
                loss_sum = self._per_example_loss(logits, y)[:count].sum()
                loss = loss_sum / count
            loss.backward()
            losses.append(loss_sum)
            hits.append(self._correct(logits, y)[:count].sum())
            self.optimizer.update(self.step + s - first, self.params, self.grads, self.opt_state, np_)
        return losses, hits

    def _fetch(self, values: list[Any]) -> list[np.ndarray]:
        """Per-step lists are stacked on the device first: one transfer each, not one per step."""
        return [(self.np.stack(v) if isinstance(v, list) else v).asnumpy() for v in values]

    def _evaluate_batch(self, x: Any, y: Any) -> tuple[Any, Any]:
        logits = self.model(x)
        return self._per_example_loss(logits, y).sum(), self._correct(logits, y).sum()

    def logits(self, images: np.ndarray) -> np.ndarray:
        """The model's outputs on host images, for parity checks."""
        return self.model(self._images(images)).asnumpy()

    # -------------------------------------------------------------- state
    def _framework_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
        params = {k: p.asnumpy() for k, p in self.params.items()}
        opt = {slot: {k: a.asnumpy() for k, a in arrays.items()} for slot, arrays in self.opt_state.items()}
        return params, opt or None  # plain SGD keeps none

    def _load_framework_state(self, params: dict[str, Any], opt_state: dict[str, Any] | None) -> None:
        self._assign(self.params, params)
        for slot, arrays in self.opt_state.items():  # none for plain SGD
            self._assign(arrays, opt_state[slot])

    def _assign(self, targets: dict[str, Any], values: dict[str, Any]) -> None:
        """Copy host arrays into the existing device arrays (the model holds references to them)."""
        for k, target in targets.items():
            target[:] = self.np.array(np.asarray(values[k], np.float32))

    def _get_canonical(self) -> dict[str, np.ndarray]:
        return self.model.to_canonical({k: p.asnumpy() for k, p in self.params.items()})

    def _set_canonical(self, params: dict[str, np.ndarray]) -> None:
        self._assign(self.params, self.model.from_canonical(params))
