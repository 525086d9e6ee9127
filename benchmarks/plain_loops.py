"""Plain training loops, one per framework: the references `benchmarks.epoch_time` times the core and the
plugin backends against.

Each loop trains `config`'s MLP (relu; the default is 784-256-10 with SGD lr 0.1, batch 256) on the
training split in the shared epoch order (`mlp_research.batching.epoch_order`), and ends each epoch
with the accuracy of the evaluated split, as the driver's epochs do. None has a driver, metric sums,
checkpoints or a schedule hook: the gap between a backend and its framework's loop is what the
backend's structure costs (or saves). An epoch's time includes the order, the training and the
evaluation, and ends with a host sync (the accuracy as a Python float).

- `jax_plain`: what one writes first: a per-batch `jax.jit` step fed with numpy batches from the host.
- `jax_plain_tuned`: the same with the XLA:CPU flags the core sets (`tune_xla_cpu`).
- `torch_plain`: the hand-tuned torch loop: resident tensors, fused `addmm` layers, an in-place relu,
  for-each SGD. It replaces the former `torch_plain` (`nn.Sequential`, `torch.randperm` batches):
  the same matmuls with separate bias adds and per-parameter updates, never faster in a paired
  per-step check, and not the backends' batch order. Threads follow the torch plugin's rule when it
  is installed, so `backend_torch` and this loop use the same count.
- `tensorflow_plain`: the fastest of the five TensorFlow loops the plugin's former bench compared on
  the CPU: the whole epoch as one `tf.function(jit_compile=True)` looping in-graph over fixed-shape
  batches (the short last batch padded and weighted 0). The slower ones: a Python loop over a
  per-step `tf.function` (Keras SGD, hand SGD, or XLA-compiled) and the in-graph loop without XLA.
  The backend compiles its chunks the same way, so the ratio shows what its bookkeeping costs.
- `mxnet_plain`: the idiomatic mxnet loop: `autograd.record`, in-place `p -= lr * grad`; the
  scratch model as the book writes it, `mlp` as hybridized gluon `Dense` layers (the two run
  different code in mxnet). Imported through the mxnet plugin, whose shim lets mxnet 1.9 load
  under numpy 2.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Callable

import numpy as np

from mlp_research import batching
from mlp_research.config import Config
from mlp_research.data import Split, Splits, load_splits


@dataclasses.dataclass
class PlainLoop:
    """A loop ready to run: `epoch(e)` trains epoch e, evaluates, and returns the accuracy."""

    epoch: Callable[[int], float]
    device: str
    compiles: bool  # compiles inside its first epoch (no separate compile time to report)


def _order(config: Config, num_train: int) -> Callable[[int], list[np.ndarray]]:
    """Epoch e's batches, one index array per step: the same batches as every backend."""
    layout = batching.make_layout(num_train, config.batch_size, 0)
    return lambda e: batching.step_batches(batching.epoch_order(config.seed, e, layout, config.data_order), layout)


def _padded_order(config: Config, num_train: int) -> Callable[[int], np.ndarray]:
    """Epoch e's order padded to whole batches (-1 marks padding): one batch shape for compiled loops."""
    layout = batching.make_layout(num_train, config.batch_size, 0)
    return lambda e: batching.epoch_order(config.seed, e, layout, config.data_order)


def _eval_batches(split: Split, batch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The evaluated split as (flat images, labels) batches of `eval_batch_size`, as the backends evaluate."""
    x = split.images.reshape(len(split), -1)
    return [(x[i:i + batch], split.labels[i:i + batch]) for i in range(0, len(split), batch)]


def _widths(config: Config) -> list[tuple[int, int]]:
    sizes = config.layer_sizes
    return list(zip(sizes[:-1], sizes[1:]))


# ------------------------------------------------------------------ JAX
def jax_loop(config: Config, splits: Splits) -> PlainLoop:
    """A per-batch jitted step on host numpy batches: the loop the core's compiled epochs replace."""
    import jax
    import jax.numpy as jnp
    import optax

    from mlp_research.jax_backend.models import build_model

    net, tx = build_model(config.spec), optax.sgd(config.lr)
    params = net.init(jax.random.PRNGKey(config.seed), jnp.zeros((1, 28, 28)))["params"]
    state = (params, tx.init(params))

    def loss_fn(p: Any, x: Any, y: Any) -> Any:
        return optax.softmax_cross_entropy_with_integer_labels(net.apply({"params": p}, x), y).mean()

    @jax.jit
    def step(p: Any, s: Any, x: Any, y: Any) -> tuple[Any, Any]:
        grads = jax.grad(loss_fn)(p, x, y)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s

    @jax.jit
    def eval_batch(p: Any, x: Any, y: Any) -> tuple[Any, Any]:
        logits = net.apply({"params": p}, x.reshape(-1, 28, 28))
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).sum(), (logits.argmax(-1) == y).sum()

    x, y, order = splits.train.images, splits.train.labels, _order(config, len(splits.train))
    # Evaluated as one writes it first, and as issue 7's baseline did (so ratios stay comparable across
    # sessions): the loss and accuracy of training-sized batches, each read back as it comes.
    evals = _eval_batches(splits.eval, config.batch_size)

    def epoch(e: int) -> float:
        nonlocal state
        for idx in order(e):
            state = step(*state, x[idx], y[idx])
        correct = 0
        for xb, yb in evals:
            _, c = eval_batch(state[0], xb, yb)
            correct += int(c)
        return correct / len(splits.eval)

    return PlainLoop(epoch, jax.devices()[0].device_kind, compiles=True)


def jax_tuned_loop(config: Config, splits: Splits) -> PlainLoop:
    """`jax_loop` with the core's XLA:CPU flags: the difference between this and `core` is the loop itself."""
    from mlp_research.jax_backend.backend import tune_xla_cpu

    tune_xla_cpu()  # before JAX starts its backends, which `jax_loop` does
    return jax_loop(config, splits)


# ---------------------------------------------------------------- torch
def _torch_threads(torch: Any) -> int:
    """The torch plugin's thread rule when it is installed, else torch's default."""
    try:
        from mlp_research_torch.trainer import configure_threads
    except ImportError:
        return torch.get_num_threads()
    return configure_threads()


def _torch_params(torch: Any, config: Config, device: Any) -> list[Any]:
    """W (fan_in, fan_out), b per layer: N(0, sigma) for the scratch model, nn.Linear's default for `mlp`."""
    torch.manual_seed(config.seed)
    params = []
    for fan_in, fan_out in _widths(config):
        if config.model == "mlp_scratch":
            w, b = torch.randn(fan_in, fan_out) * config.sigma, torch.zeros(fan_out)
        else:  # nn.Linear's kaiming_uniform(a=sqrt(5)) and bias init: both U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            bound = fan_in ** -0.5
            w, b = (torch.rand(fan_in, fan_out) * 2 - 1) * bound, (torch.rand(fan_out) * 2 - 1) * bound
        params += [w.to(device).requires_grad_(), b.to(device).requires_grad_()]
    return params


def torch_loop(config: Config, splits: Splits) -> PlainLoop:
    """The fastest plain torch loop found: fused addmm layers, in-place relu, for-each SGD, resident tensors."""
    import torch
    from torch.nn import functional as F

    _torch_threads(torch)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    params = _torch_params(torch, config, device)
    opt = torch.optim.SGD(params, lr=config.lr, foreach=True)
    x = torch.from_numpy(splits.train.images.reshape(len(splits.train), -1)).to(device)
    y = torch.from_numpy(splits.train.labels.astype(np.int64)).to(device)
    evals = [(torch.from_numpy(xb).to(device), torch.from_numpy(yb.astype(np.int64)).to(device))
             for xb, yb in _eval_batches(splits.eval, config.eval_batch_size)]
    order = _order(config, len(splits.train))

    def forward(h: Any) -> Any:
        for i in range(0, len(params) - 2, 2):
            h = torch.addmm(params[i + 1], h, params[i]).relu_()
        return torch.addmm(params[-1], h, params[-2])

    def epoch(e: int) -> float:
        batches = order(e)
        perm = torch.from_numpy(np.concatenate(batches).astype(np.int64)).to(device)
        starts = np.cumsum([0] + [len(b) for b in batches])
        for i, end in zip(starts[:-1], starts[1:]):
            idx = perm[i:end]
            loss = F.cross_entropy(forward(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.inference_mode():
            hits = sum((forward(xb).argmax(1) == yb).sum() for xb, yb in evals)
        return int(hits) / len(splits.eval)  # int() waits for the device

    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    return PlainLoop(epoch, name, compiles=False)


# ----------------------------------------------------------- TensorFlow
def _tf_params(tf: Any, config: Config) -> list[Any]:
    """N(0, sigma) weights for the scratch model, Keras Dense's Glorot uniform for `mlp`; zero biases."""
    params = []
    for k, (fan_in, fan_out) in enumerate(_widths(config)):
        seed = [config.seed, k]
        if config.model == "mlp_scratch":
            w = tf.random.stateless_normal((fan_in, fan_out), seed=seed) * config.sigma
        else:
            limit = math.sqrt(6 / (fan_in + fan_out))
            w = tf.random.stateless_uniform((fan_in, fan_out), seed=seed, minval=-limit, maxval=limit)
        params += [tf.Variable(w), tf.Variable(tf.zeros(fan_out))]
    return params


def tensorflow_loop(config: Config, splits: Splits) -> PlainLoop:
    """The whole epoch as one XLA-compiled `tf.function`, the fastest TensorFlow loop on the CPU."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    params, lr = _tf_params(tf, config), config.lr
    n, batch, order = len(splits.train), config.batch_size, _padded_order(config, len(splits.train))
    layout = batching.make_layout(n, batch, 0)
    x, y = tf.constant(splits.train.images.reshape(n, -1)), tf.constant(splits.train.labels)
    evals = [(tf.constant(xb), tf.constant(yb)) for xb, yb in _eval_batches(splits.eval, config.eval_batch_size)]

    def forward(h: Any) -> Any:
        for i in range(0, len(params) - 2, 2):
            h = tf.nn.relu(tf.matmul(h, params[i]) + params[i + 1])
        return tf.matmul(h, params[-2]) + params[-1]

    @tf.function(jit_compile=True)
    def train_epoch(perm: Any) -> None:
        for s in tf.range(layout.steps_per_epoch):
            start = s * batch
            idx = tf.slice(perm, [start], [batch])
            weight = tf.cast(idx >= 0, tf.float32)  # the padding of the short batch
            idx = tf.maximum(idx, 0)
            with tf.GradientTape() as tape:
                ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.gather(y, idx),
                                                                    logits=forward(tf.gather(x, idx)))
                loss = tf.reduce_sum(ce * weight) / tf.reduce_sum(weight)
            for p, g in zip(params, tape.gradient(loss, params)):
                p.assign_sub(lr * g)

    @tf.function(jit_compile=True)
    def correct(xb: Any, yb: Any) -> Any:
        return tf.reduce_sum(tf.cast(tf.equal(tf.argmax(forward(xb), 1, output_type=yb.dtype), yb), tf.int32))

    def epoch(e: int) -> float:
        train_epoch(tf.constant(order(e)[: layout.order_length]))
        return int(sum(correct(xb, yb) for xb, yb in evals)) / len(splits.eval)

    gpus = tf.config.list_physical_devices("GPU")
    device = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "cpu"
    return PlainLoop(epoch, device, compiles=True)


# ---------------------------------------------------------------- mxnet
def _mxnet_net(mx: Any, config: Config, x_all: Any) -> tuple[Callable[[Any], Any], list[tuple[Any, Any]]]:
    """The network and its (parameter, gradient) pairs: the book's scratch model, or hybridized gluon."""
    np_, spec = mx.np, config.spec
    if spec.model == "mlp_scratch":
        params = []
        for fan_in, fan_out in _widths(config):
            params += [np_.random.normal(scale=spec.sigma, size=(fan_in, fan_out)), np_.zeros(fan_out)]
        for p in params:
            p.attach_grad()

        def net(h: Any) -> Any:
            for i in range(0, len(params) - 2, 2):
                h = np_.maximum(np_.dot(h, params[i]) + params[i + 1], 0)
            return np_.dot(h, params[-2]) + params[-1]

        return net, [(p, p.grad) for p in params]
    nn = mx.gluon.nn
    gluon_net = nn.HybridSequential()
    for width in spec.num_hiddens:
        gluon_net.add(nn.Dense(width, activation="relu"))
    gluon_net.add(nn.Dense(spec.num_outputs))
    gluon_net.initialize()  # gluon's default, Uniform(0.07)
    gluon_net.hybridize(static_alloc=True, static_shape=True)
    gluon_net(x_all[:1])
    return gluon_net, [(p.data(), p.grad()) for p in gluon_net.collect_params().values()]


def mxnet_loop(config: Config, splits: Splits) -> PlainLoop:
    """The idiomatic mxnet loop: resident arrays, `autograd.record`, in-place SGD, one sync per epoch."""
    from mlp_research_mxnet.framework import mxnet

    mx = mxnet()
    np_, npx, autograd = mx.np, mx.npx, mx.autograd
    mx.random.seed(config.seed)
    n, order, lr = len(splits.train), _order(config, len(splits.train)), config.lr
    x_all = np_.array(splits.train.images.reshape(n, -1))
    y_all = np_.array(splits.train.labels, dtype=np.int64)
    evals = [(np_.array(xb), np_.array(yb, dtype=np.int64))
             for xb, yb in _eval_batches(splits.eval, config.eval_batch_size)]
    net, pairs = _mxnet_net(mx, config, x_all)

    def epoch(e: int) -> float:
        batches = order(e)
        perm = np_.array(np.concatenate(batches), dtype=np.int32)
        starts = np.cumsum([0] + [len(b) for b in batches])
        for i, end in zip(starts[:-1], starts[1:]):
            idx = perm[int(i):int(end)]
            xb, yb = np_.take(x_all, idx, axis=0), np_.take(y_all, idx, axis=0)
            with autograd.record():
                loss = -npx.pick(npx.log_softmax(net(xb)), yb).mean()
            loss.backward()
            for p, g in pairs:
                p -= lr * g
        hits = sum((net(xb).argmax(axis=1) == yb).sum() for xb, yb in evals)
        npx.waitall()
        return int(hits) / len(splits.eval)

    return PlainLoop(epoch, "cpu", compiles=config.model == "mlp")


LOOPS: dict[str, Callable[[Config, Splits], PlainLoop]] = {
    "jax_plain": jax_loop, "jax_plain_tuned": jax_tuned_loop, "torch_plain": torch_loop,
    "tensorflow_plain": tensorflow_loop, "mxnet_plain": mxnet_loop}


def run(name: str, config: Config) -> dict:
    """Train `config.max_epochs` epochs with loop `name`; its figures in `epoch_time`'s result format."""
    if config.activation != "relu":
        raise ValueError(f"{name}: the plain loops are written for relu, not {config.activation}")
    t0 = time.perf_counter()
    splits = load_splits(config)
    loop = LOOPS[name](config, splits)
    times, acc = [], float("nan")
    for e in range(config.max_epochs):
        t = time.perf_counter()
        acc = loop.epoch(e)
        times.append(time.perf_counter() - t)
    return {"epoch_seconds": times, "compile_seconds": float("nan") if loop.compiles else 0.0,
            "time_to_result": time.perf_counter() - t0, "final_val_acc": acc, "device": loop.device}
