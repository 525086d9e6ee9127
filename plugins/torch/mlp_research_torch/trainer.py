"""`TorchTrainer`: one run's model, optimiser and resident data in PyTorch.

Speed comes from what is not done: the data are tensors on the device from the
start, each batch is one `index_select` by the shared epoch order (no
DataLoader, no per-sample transforms), and the per-step metrics are written
into device buffers, so nothing waits for the device until the driver asks
for an epoch's sums. Evaluation runs under `torch.inference_mode` in large
batches. `torch.compile` is optional (`MLP_RESEARCH_TORCH_COMPILE=1`): for
this small MLP on CPU it was slower than eager (see the plugin README), so it is off
by default.

The optimiser state is created in full when the trainer is built (zeros,
which for these algorithms is exactly a fresh state), so `state_dict()` has one
structure for the whole run and `abstract_state_dict()` can describe it before
the first step, as the driver's checkpoint restore needs.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from mlp_research import batching, schedules
from mlp_research.backends.base import Sums
from mlp_research.config import Config
from mlp_research.data import Splits
from mlp_research_torch import models
from mlp_research_torch.optim import make_optimizer

COMPILE_ENV = "MLP_RESEARCH_TORCH_COMPILE"
THREADS_ENV = "MLP_RESEARCH_TORCH_THREADS"
DEVICE_ENV = "MLP_RESEARCH_TORCH_DEVICE"


def pick_device() -> torch.device:
    """cuda when available (or $MLP_RESEARCH_TORCH_DEVICE), else the CPU."""
    wanted = os.environ.get(DEVICE_ENV, "")
    if wanted:
        return torch.device(wanted)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def configure_threads() -> int:
    """Intra-op threads: $MLP_RESEARCH_TORCH_THREADS, else torch's default capped at the CPUs this process may use.

    The count never depends on the machine's load: float reductions differ
    between thread counts, so a load-dependent choice would make a resumed run
    differ from an uninterrupted one. On an oversubscribed machine one thread is
    far faster for these small matrices (a parallel region waits for its slowest
    thread: ~300 ms vs ~30 ms per 784x256 step at load ~6 on 2 cores); set
    MLP_RESEARCH_TORCH_THREADS=1 there.
    """
    env = os.environ.get(THREADS_ENV, "")
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = int(env) if env else min(torch.get_num_threads(), allowed)
    if threads >= 1 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def compile_requested() -> bool:
    return os.environ.get(COMPILE_ENV, "").lower() in ("1", "true", "yes", "on")


class TorchTrainer:
    """Model, optimiser state and data of one run, placed once on one device."""

    def __init__(self, config: Config, splits: Splits, device: torch.device | None = None):
        t0 = time.perf_counter()
        self.config = config
        self.spec = config.model
        self.threads = configure_threads()
        self.device = device or pick_device()
        train = splits.train
        self.layout = batching.make_layout(len(train), config.batch_size, config.steps_per_chunk)

        # Seeded from config.seed without disturbing the caller's global torch RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.model = models.build_model(self.spec).to(self.device)
        self.param_names = [name.replace(".", "_") for name, _ in self.model.named_parameters()]
        self.params = list(self.model.parameters())
        self.optimizer = make_optimizer(config, self.params)
        self._materialise_optimizer_state()
        self.step = 0

        self.train_x, self.train_y = self._put(train.images, train.labels)
        self.eval_x, self.eval_y = self._put(splits.eval.images, splits.eval.labels)
        self.eval_batch = max(1, min(config.eval_batch_size, len(splits.eval)))

        steps = self.layout.steps_per_epoch
        sizes = np.full(steps, config.batch_size, np.float64)
        sizes[-1] = len(train) - (steps - 1) * config.batch_size  # the short last batch
        self._host_batch_sizes = sizes.astype(np.int64)
        self._batch_sizes = torch.from_numpy(sizes).to(self.device)
        self._losses = torch.zeros(steps, dtype=torch.float32, device=self.device)
        self._correct = torch.zeros(steps, dtype=torch.int64, device=self.device)
        self._epoch = 0
        self._trained = (0, 0)  # [first, end) steps of the current epoch trained by this process
        self._carried = Sums(0.0, 0, 0)
        self._order = self._epoch_order(0)

        self.compiled = compile_requested()
        self.forward = torch.compile(self.model) if self.compiled else self.model
        if self.compiled:
            self._warm_up()
        self.compile_seconds = time.perf_counter() - t0

    # ------------------------------------------------------------ set-up
    def _put(self, images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(images, np.float32)).to(self.device)
        y = torch.from_numpy(np.asarray(labels, np.int64)).to(self.device)  # cross_entropy wants int64
        return x, y

    def _materialise_optimizer_state(self) -> None:
        """Create every state entry of the optimiser now, as zeros.

        torch.optim fills its state lazily on the first step. Its structure is
        learned from a throwaway optimiser on shadow tensors stepped once, and the
        real state is set to zeros of that structure: a zero step count, zero
        moments and zero momentum buffers update exactly as a fresh state does.
        """
        if all(len(self.optimizer.state[p]) for p in self.params):
            return
        shadow = [torch.zeros_like(p, requires_grad=True) for p in self.params]
        probe = make_optimizer(self.config, shadow)
        for s in shadow:
            s.grad = torch.zeros_like(s)
        probe.step()
        for p, s in zip(self.params, shadow):
            for key, value in probe.state[s].items():
                if torch.is_tensor(value):
                    self.optimizer.state[p][key] = torch.zeros_like(value)
                elif value is not None:
                    self.optimizer.state[p][key] = type(value)(0)

    def _warm_up(self) -> None:
        """Compile the forward/backward for the train batch shapes and the eval shapes (no update)."""
        sizes = {self.config.batch_size, int(self._host_batch_sizes[-1])}
        for n in sizes:
            loss = F.cross_entropy(self.forward(self.train_x[:n]), self.train_y[:n])
            loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
        self._evaluate(self.eval_x, self.eval_y)

    def describe(self) -> dict[str, Any]:
        kind = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return {"parallel": "none", "num_devices": 1, "device": kind, "platform": self.device.type,
                "torch_threads": self.threads, "torch_compile": self.compiled}

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        order = batching.epoch_order(self.config.seed, epoch, self.layout)[: self.layout.num_train]
        return torch.from_numpy(order.astype(np.int64)).to(self.device)

    # ----------------------------------------------------------- training
    def start_epoch(self, epoch: int, sums: Sums | None = None) -> None:
        self._epoch = epoch
        self._order = self._epoch_order(epoch)
        self._carried = sums or Sums(0.0, 0, 0)
        self._losses.zero_()
        self._correct.zero_()
        self._trained = (-1, -1)

    def train_chunk(self, chunk: int) -> None:
        layout = self.layout
        first = chunk * layout.steps_per_chunk
        end = layout.steps_done(chunk)
        if self._trained[0] < 0:
            self._trained = (first, first)
        batch, n = layout.batch_size, layout.num_train
        model, optimizer = self.forward, self.optimizer
        scheduled = self.config.schedule != "constant"
        x_all, y_all, order = self.train_x, self.train_y, self._order
        losses, correct = self._losses, self._correct
        for s in range(first, end):
            idx = order[s * batch: min((s + 1) * batch, n)]
            x, y = x_all.index_select(0, idx), y_all.index_select(0, idx)
            if scheduled:
                lr = schedules.learning_rate(self.config, layout.steps_per_epoch, self.step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
            logits = model(x)
            loss = F.cross_entropy(logits, y)  # mean over this batch's examples, as optax's loss / count
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                losses[s] = loss
                correct[s] = (logits.argmax(dim=1) == y).sum()
            self.step += 1
        self._trained = (self._trained[0], end)

    def epoch_sums(self) -> Sums:
        first, end = self._trained
        carried = self._carried
        if first < 0 or end <= first:
            return carried
        losses = self._losses[first:end]
        bad = ~torch.isfinite(losses)
        # One transfer for everything: loss sum over examples (float64), correct, first bad step.
        loss_sum = (losses.double() * self._batch_sizes[first:end]).sum()
        first_bad = torch.where(bad.any(), bad.int().argmax(), torch.tensor(-1, device=self.device))
        host = torch.stack([loss_sum, self._correct[first:end].sum().double(), first_bad.double()]).tolist()
        count = int(self._host_batch_sizes[first:end].sum())
        first_nonfinite = carried.first_nonfinite_step
        if first_nonfinite < 0 and host[2] >= 0:
            first_nonfinite = self._epoch * self.layout.steps_per_epoch + first + int(host[2])
        return Sums(carried.loss_sum + host[0], carried.correct + int(host[1]), carried.count + count,
                    first_nonfinite)

    # --------------------------------------------------------- evaluation
    @torch.inference_mode()
    def _evaluate(self, x: torch.Tensor, y: torch.Tensor) -> Sums:
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for i in range(0, len(y), self.eval_batch):
            xb, yb = x[i: i + self.eval_batch], y[i: i + self.eval_batch]
            logits = self.forward(xb)
            loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
            correct += (logits.argmax(dim=1) == yb).sum()
        return Sums(float(loss_sum.item()), int(correct.item()), len(y))

    def evaluate_eval_split(self) -> Sums:
        return self._evaluate(self.eval_x, self.eval_y)

    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> Sums:
        return self._evaluate(*self._put(images, labels))

    @torch.inference_mode()
    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits of a batch with the current parameters (for parity checks)."""
        return self.forward(self._put(images, np.zeros(len(images), np.int64))[0]).cpu().numpy()

    # -------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """{'step', 'params' (torch's own layout), 'opt' (per parameter)} as numpy arrays."""
        state: dict[str, Any] = {
            "step": np.asarray(self.step, np.int64),
            "params": {name: _numpy(p) for name, p in zip(self.param_names, self.params)},
        }
        opt = {}
        for name, p in zip(self.param_names, self.params):
            entries = {key: _numpy(value) for key, value in self.optimizer.state[p].items() if value is not None}
            if entries:
                opt[name] = entries
        if opt:  # plain SGD keeps no state
            state["opt"] = opt
        return state

    def abstract_state_dict(self) -> dict[str, Any]:
        """Zeros of the state's structure, shapes and dtypes: fixed from construction on."""
        return _map(lambda a: np.zeros(a.shape, a.dtype), self.state_dict())

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(np.asarray(state["step"]))
        for name, p in zip(self.param_names, self.params):
            p.copy_(torch.from_numpy(np.array(state["params"][name])))
        for name, p in zip(self.param_names, self.params):
            entries = self.optimizer.state[p]
            for key, value in state.get("opt", {}).get(name, {}).items():
                current = entries[key]
                if torch.is_tensor(current):
                    current.copy_(torch.from_numpy(np.array(value)))
                else:
                    entries[key] = type(current)(np.asarray(value).item())

    def get_params(self) -> dict[str, np.ndarray]:
        return models.to_canonical(self.model, self.spec)

    def set_params(self, params: dict[str, np.ndarray]) -> None:
        models.load_canonical(self.model, self.spec, params)


def _numpy(value: Any) -> np.ndarray:
    if torch.is_tensor(value):
        return value.detach().cpu().numpy().copy()
    return np.asarray(value)


def _map(fn, tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _map(fn, v) for k, v in tree.items()}
    return fn(tree)
