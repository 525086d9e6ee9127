"""The mxnet backend: both seed models trained with resident arrays and autograd.

Importing this module imports no mxnet; `mlp_research_mxnet.framework.mxnet()`
does, the first time a backend method needs it. The trainer keeps the training
and evaluation data as mxnet arrays, gathers each batch with the shared epoch
order, records the forward pass, and writes each step's loss and accuracy sums
into per-epoch device buffers that are read once, in `epoch_sums()`.
"""

from __future__ import annotations

import importlib.metadata as md
import time
from typing import Any

import numpy as np

from mlp_research import batching
from mlp_research.backends.base import Sums
from mlp_research.config import Config
from mlp_research.data import Splits
from mlp_research.optimizers import SUPPORTED
from mlp_research_mxnet import optim
from mlp_research_mxnet.framework import mxnet
from mlp_research_mxnet.models import build_model


class MXNetBackend:
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
        return MXNetTrainer(config, splits)


class MXNetTrainer:
    """Model, optimiser state and resident data of one run."""

    def __init__(self, config: Config, splits: Splits, hybridize: bool = True):
        mx = mxnet()
        self.mx, self.np = mx, mx.np
        self.config = config
        self.layout = batching.make_layout(len(splits.train), config.batch_size, config.steps_per_chunk)
        t0 = time.perf_counter()
        mx.random.seed(config.seed)
        self.model = build_model(config.model, hybridize)
        self.optimizer = optim.Optimizer(config, self.layout.steps_per_epoch)
        self.params = self.model.state_params()
        self.grads = self.model.grads()  # gradient buffers: written in place by every backward
        self.opt_state = self.optimizer.init_state(self.params, self.np)
        self.step = 0
        self.train_x = self._images(splits.train.images)
        # int64 labels compare with argmax's int64 output without a cast.
        self.train_y = self.np.array(splits.train.labels, dtype=np.int64)
        self.eval_batch = max(1, min(config.eval_batch_size, len(splits.eval)))
        self.eval_data = self._eval_batches(splits.eval.images, splits.eval.labels)
        n, b = self.layout.num_train, self.layout.batch_size
        last = n - (self.layout.steps_per_epoch - 1) * b  # examples in the (maybe short) last batch
        self.last_count = last
        self.start_epoch(0)
        self._warm_up()
        self.compile_seconds = time.perf_counter() - t0

    # ------------------------------------------------------------ helpers
    def _images(self, images: np.ndarray) -> Any:
        return self.np.array(np.asarray(images, np.float32).reshape(len(images), -1))

    def _eval_batches(self, images: np.ndarray, labels: np.ndarray) -> list[tuple[Any, Any]]:
        """Resident (x, y) batches covering every example (the last may be short)."""
        b = self.eval_batch
        return [(self._images(images[i:i + b]), self.np.array(labels[i:i + b], dtype=np.int64))
                for i in range(0, len(labels), b)]

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
        for x, _ in self.eval_data[:1] + self.eval_data[-1:]:
            self.model(x)
        self.mx.npx.waitall()

    # ----------------------------------------------------------- training
    def describe(self) -> dict[str, Any]:
        return {"parallel": "none", "num_devices": 1, "device": "cpu", "platform": "cpu",
                "hybridized": self.config.model.model == "mlp"}

    def start_epoch(self, epoch: int, sums: Sums | None = None) -> None:
        self.epoch = epoch
        self.order = self.np.array(batching.epoch_order(self.config.seed, epoch, self.layout), dtype=np.int32)
        # Per-step device scalars, kept by reference (no op, no sync) and stacked once in epoch_sums().
        self.step_loss: list[tuple[int, Any]] = []
        self.step_correct: list[Any] = []
        self.carried = sums if sums is not None else Sums(0.0, 0, 0)
        self.count = 0  # examples trained this epoch in this process (known on the host: no sync)

    def train_chunk(self, chunk: int) -> None:
        layout, np_, autograd = self.layout, self.np, self.mx.autograd
        first = chunk * layout.steps_per_chunk
        for s in range(first, layout.steps_done(chunk)):
            start = s * layout.batch_size
            idx = self.order[start:start + layout.batch_size]
            x, y = np_.take(self.train_x, idx, axis=0), np_.take(self.train_y, idx, axis=0)
            short = s == layout.steps_per_epoch - 1 and self.last_count < layout.batch_size
            count = self.last_count if short else layout.batch_size
            with autograd.record():
                logits = self.model(x)
                per_example = self._per_example_loss(logits, y)
                if short:  # the padding rows come last: the loss is the mean over the batch's real examples
                    per_example = per_example[:count]
                loss_sum = per_example.sum()
                loss = loss_sum / count
            loss.backward()
            correct = self._correct(logits, y)
            if short:
                correct = correct[:count]
            self.step_loss.append((s, loss_sum))
            self.step_correct.append(correct.sum())
            self.optimizer.update(self.step, self.params, self.grads, self.opt_state, np_)
            self.step += 1
            self.count += count

    def epoch_sums(self) -> Sums:
        # Only the steps trained in this process: carried sums cover those before a mid-epoch resume.
        if self.step_loss:
            losses = self.np.stack([loss for _, loss in self.step_loss]).asnumpy()
            correct = self.np.stack(self.step_correct).asnumpy()
        else:
            losses, correct = np.zeros(0, np.float32), np.zeros(0, np.int64)
        bad = np.flatnonzero(~np.isfinite(losses))
        first_bad = self.epoch * self.layout.steps_per_epoch + self.step_loss[bad[0]][0] if len(bad) else -1
        return Sums(self.carried.loss_sum + float(losses.astype(np.float64).sum()),
                    self.carried.correct + int(correct.sum()), self.carried.count + self.count, first_bad)

    # --------------------------------------------------------- evaluation
    def _evaluate_batches(self, batches: list[tuple[Any, Any]]) -> Sums:
        loss_sum = self.np.zeros((), dtype=np.float32)
        correct = self.np.zeros((), dtype=np.int64)
        count = 0
        for x, y in batches:
            logits = self.model(x)
            loss_sum = loss_sum + self._per_example_loss(logits, y).sum()
            correct = correct + self._correct(logits, y).sum()
            count += int(y.shape[0])
        return Sums(float(loss_sum.item()), int(correct.item()), count)

    def evaluate_eval_split(self) -> Sums:
        return self._evaluate_batches(self.eval_data)

    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> Sums:
        return self._evaluate_batches(self._eval_batches(images, labels))

    def logits(self, images: np.ndarray) -> np.ndarray:
        """The model's outputs on host images, for parity checks."""
        return self.model(self._images(images)).asnumpy()

    # -------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """{"step", "params", "opt_state"}; plain SGD keeps no state, so "opt_state" is left out (no empty sub-tree)."""
        state: dict[str, Any] = {"step": np.asarray(self.step, np.int32),
                                 "params": {k: p.asnumpy() for k, p in self.params.items()}}
        if self.opt_state:
            state["opt_state"] = {slot: {k: a.asnumpy() for k, a in arrays.items()}
                                  for slot, arrays in self.opt_state.items()}
        return state

    def abstract_state_dict(self) -> dict[str, Any]:
        shapes = self.model.state_shapes()
        state: dict[str, Any] = {"step": np.zeros((), np.int32),
                                 "params": {k: np.zeros(s, np.float32) for k, s in shapes.items()}}
        if self.opt_state:
            state["opt_state"] = self.optimizer.abstract_state(shapes)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._assign(self.params, state["params"])
        for slot, arrays in self.opt_state.items():  # none for plain SGD
            self._assign(arrays, state["opt_state"][slot])
        self.step = int(state["step"])

    def _assign(self, targets: dict[str, Any], values: dict[str, Any]) -> None:
        """Copy host arrays into the existing device arrays (the model holds references to them)."""
        for k, target in targets.items():
            value = np.asarray(values[k], np.float32)
            if value.shape != tuple(target.shape):
                raise ValueError(f"state {k} has shape {value.shape}, the model needs {tuple(target.shape)}")
            target[:] = self.np.array(value)

    def get_params(self) -> dict[str, np.ndarray]:
        return self.model.to_canonical({k: p.asnumpy() for k, p in self.params.items()})

    def set_params(self, params: dict[str, np.ndarray]) -> None:
        for name, shape in self.config.model.canonical_shapes().items():
            if name not in params:
                raise ValueError(f"canonical parameters lack {name}")
            if tuple(params[name].shape) != shape:
                raise ValueError(f"canonical {name} has shape {tuple(params[name].shape)}, spec needs {shape}")
        self._assign(self.params, self.model.from_canonical(params))
