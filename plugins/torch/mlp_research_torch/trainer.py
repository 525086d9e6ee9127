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
the first step, as the driver's checkpoint restore needs. Epoch sums, the state
layout, parameter checks and evaluation batching are the base class's.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from mlp_research import batching, schedules
from mlp_research.backends.base import Trainer
from mlp_research.config import Config
from mlp_research.data import Splits
from mlp_research_torch import models
from mlp_research_torch.optim import make_optimizer

COMPILE_ENV = "MLP_RESEARCH_TORCH_COMPILE"
THREADS_ENV = "MLP_RESEARCH_TORCH_THREADS"
DEVICE_ENV = "MLP_RESEARCH_TORCH_DEVICE"


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


class TorchTrainer(Trainer):
    """Model, optimiser state and data of one run, placed once on one device."""

    def __init__(self, config: Config, splits: Splits):
        super().__init__(config, splits)
        t0 = time.perf_counter()
        self.threads = configure_threads()
        # $MLP_RESEARCH_TORCH_DEVICE, else cuda when available, else the CPU.
        self.device = torch.device(os.environ.get(DEVICE_ENV) or ("cuda" if torch.cuda.is_available() else "cpu"))
        # Seeded from config.seed without disturbing the caller's global torch RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.model = models.build_model(self.spec).to(self.device)
        self.param_names = [name.replace(".", "_") for name, _ in self.model.named_parameters()]
        self.params = list(self.model.parameters())
        self.optimizer = make_optimizer(config, self.params)
        self._materialise_optimizer_state()
        # --matmul_precision=bfloat16: torch.autocast runs every matmul, forward and backward, in bfloat16 on
        # the CPU's matrix engine (oneDNN on AMX) and the loss in float32; parameters and optimiser stay float32.
        self.bfloat16 = config.matmul_precision == "bfloat16"
        self.train_x, self.train_y = self._put_batch(splits.train.images, splits.train.labels)
        self.keep_eval_split(splits)
        steps = self.layout.steps_per_epoch
        self._losses = torch.zeros(steps, dtype=torch.float32, device=self.device)  # per-step loss sums
        self._correct = torch.zeros(steps, dtype=torch.int64, device=self.device)
        self.compiled = os.environ.get(COMPILE_ENV, "").lower() in ("1", "true", "yes", "on")
        self.forward = torch.compile(self.model) if self.compiled else self.model
        self.start_epoch(0)
        if self.compiled:
            self._warm_up()
        self.compile_seconds = time.perf_counter() - t0

    # ------------------------------------------------------------ set-up
    def _put_batch(self, images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Images as float32, or with bfloat16 matmuls already rounded to bfloat16: the model's first operation
        is a matmul, which autocast would round them for at every step (the same values; a bfloat16 copy of
        the images, where float32 images are shared with the caller's array)."""
        if self.bfloat16:  # rounded a slice at a time: no float32 copy of the whole set
            x = torch.empty(np.shape(images), dtype=torch.bfloat16)
            for i in range(0, len(images), 8192):
                x[i:i + 8192] = torch.from_numpy(np.ascontiguousarray(images[i:i + 8192], np.float32))
            x = x.to(self.device)
        else:
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
        last = self.layout.num_train - (self.layout.steps_per_epoch - 1) * self.config.batch_size
        for n in {self.config.batch_size, last}:
            with self._precision():
                logits = self.forward(self.train_x[:n])
            F.cross_entropy(logits.float(), self.train_y[:n]).backward()
        self.optimizer.zero_grad(set_to_none=True)
        self.evaluate_eval_split()

    def _precision(self) -> torch.autocast:
        """The matmul precision of the run: bfloat16 autocast, or (disabled) torch's float32."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bfloat16)

    def describe(self) -> dict[str, Any]:
        kind = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return {"parallel": "none", "num_devices": 1, "device": kind, "platform": self.device.type,
                "torch_threads": self.threads, "torch_compile": self.compiled}

    # ----------------------------------------------------------- training
    def _start_epoch(self, epoch: int, order: np.ndarray) -> None:
        # Each step's real examples come first in its slice (padding, -1, last): the counts cut them.
        self._order = torch.from_numpy(order.astype(np.int64)).to(self.device)
        self._counts = batching.step_counts(order, self.layout).tolist()

    def _train_steps(self, first: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        layout = self.layout
        batch, counts = layout.batch_size, self._counts
        model, optimizer = self.forward, self.optimizer
        scheduled = self.config.schedule != "constant"
        x_all, y_all, order = self.train_x, self.train_y, self._order
        losses, correct = self._losses, self._correct
        for s in range(first, end):
            idx = order[s * batch: s * batch + counts[s]]
            x, y = x_all.index_select(0, idx), y_all.index_select(0, idx)
            if scheduled:
                lr = schedules.learning_rate(self.config, layout.steps_per_epoch, self.step + s - first)
                for group in optimizer.param_groups:
                    group["lr"] = lr
            with self._precision():
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)  # mean over this batch's examples, as optax's loss / count
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                losses[s] = loss * len(idx)
                correct[s] = (logits.argmax(dim=1) == y).sum()
        return losses[first:end], correct[first:end]

    def _fetch(self, values: list[Any]) -> list[np.ndarray]:
        """Device tensors to numpy in one transfer."""
        if not values:
            return []
        flat = torch.cat([v.reshape(-1).to(torch.float64) for v in values]).cpu().numpy()
        sizes = np.cumsum([v.numel() for v in values])[:-1]
        return np.split(flat, sizes)

    # --------------------------------------------------------- evaluation
    @torch.inference_mode()
    def _evaluate_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self._precision():
            logits = self.forward(x).float()
        return F.cross_entropy(logits, y, reduction="sum"), (logits.argmax(dim=1) == y).sum()

    @torch.inference_mode()
    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits of a batch with the current parameters (for parity checks)."""
        with self._precision():
            return self.forward(self._put_batch(images, np.zeros(len(images), np.int64))[0]).float().cpu().numpy()

    # -------------------------------------------------------------- state
    def _framework_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
        """Parameters in torch's own layout, and the optimiser's state per parameter (None for plain SGD)."""
        params = {name: _numpy(p) for name, p in zip(self.param_names, self.params)}
        opt = {}
        for name, p in zip(self.param_names, self.params):
            entries = {key: _numpy(value) for key, value in self.optimizer.state[p].items() if value is not None}
            if entries:
                opt[name] = entries
        return params, opt or None

    @torch.no_grad()
    def _load_framework_state(self, params: dict[str, Any], opt_state: dict[str, Any] | None) -> None:
        for name, p in zip(self.param_names, self.params):
            p.copy_(torch.from_numpy(np.array(params[name])))
            entries = self.optimizer.state[p]
            for key, value in (opt_state or {}).get(name, {}).items():
                current = entries[key]
                if torch.is_tensor(current):
                    current.copy_(torch.from_numpy(np.array(value)))
                else:
                    entries[key] = type(current)(np.asarray(value).item())

    def _get_canonical(self) -> dict[str, np.ndarray]:
        return {name: _numpy(t) for name, t in models.canonical_tensors(self.model, self.spec).items()}

    @torch.no_grad()
    def _set_canonical(self, params: dict[str, np.ndarray]) -> None:
        """Copy in place (the optimiser's references stay valid); `params` are the base's checked float32 copies."""
        for name, target in models.canonical_tensors(self.model, self.spec).items():
            target.copy_(torch.from_numpy(params[name]))


def _numpy(value: Any) -> np.ndarray:
    if torch.is_tensor(value):
        return value.detach().cpu().numpy().copy()
    return np.asarray(value)
