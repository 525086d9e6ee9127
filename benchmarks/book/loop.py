"""The project's chapter training (its Flax models, optax SGD, its loss and pixel table) with the data order,
the initialisation and the evaluation exposed, for the factor experiments; seeds vmapped together.

Same mathematics as `mlp_research.jax_backend.step`: each step's loss is the sum over its real examples
divided by their count (a short batch is padded with weight 0), the update is `optax.sgd(lr)`, the images are
`PIXEL_VALUES[pixels]`; only here the short batch may sit at any step, which the core's positional padding
cannot express. The test split is evaluated in the book's batches (file order, 256, the last 16) so both
accuracy statistics come from one pass: the book's mean of batch accuracies and correct / 10,000.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.book import orders
from mlp_research.data import PIXEL_VALUES
from mlp_research.jax_backend.models import build_model
from mlp_research.spec import ModelSpec

INITS = ("project", "torch_default")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One experimental condition: the chapter's defaults unless a factor changes them."""

    model: str = "mlp_scratch"
    order: str = "examples"
    init: str = "project"
    lr: float = 0.1
    batch_size: int = 256
    epochs: int = 10
    eval_batch: int = 256
    short_batch: str = "mean"  # mean: a short batch's loss is the mean over its examples; scaled: sum / batch_size
    probe: bool = False  # also evaluate just before each epoch's last update (changes no training)


def init_params(setting: Setting, model, seed: int) -> dict:
    """The project's init (`model.init` with PRNGKey(seed)), or PyTorch's nn.Linear default for the concise model:
    weights and biases uniform in +-1/sqrt(fan_in) (kaiming_uniform with a=sqrt(5))."""
    if setting.init != "project" and (setting.init != "torch_default" or setting.model != "mlp"):
        raise ValueError(f"unknown init {setting.init!r} for {setting.model}; choose one of {', '.join(INITS)}"
                         " (torch_default: the concise model only; the book's scratch init is N(0, 0.01) everywhere)")
    key = jax.random.PRNGKey(seed)
    params = model.init(key, jnp.zeros((1, 28, 28), jnp.float32))["params"]
    if setting.init == "project":
        return params
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    out = []
    for k, (path, leaf) in zip(keys, leaves):
        fan_in = leaf.shape[0] if leaf.ndim == 2 else _fan_in_of_bias(params, path)
        bound = 1.0 / np.sqrt(fan_in)
        out.append(jax.random.uniform(k, leaf.shape, jnp.float32, -bound, bound))
    return jax.tree_util.tree_unflatten(treedef, out)


def _fan_in_of_bias(params: dict, path) -> int:
    """A bias's layer's fan_in: the first dimension of the weight beside it (Dense `kernel` or scratch `W<i>`)."""
    parent = params
    for p in path[:-1]:
        parent = parent[p.key]
    name = str(path[-1].key)
    weight = parent["kernel"] if name == "bias" else parent["W" + name[1:]]
    return int(weight.shape[0])


def _make_functions(setting: Setting, apply_fn):
    tx = optax.sgd(setting.lr)
    table = jnp.asarray(PIXEL_VALUES)

    def step(carry, batch):
        params, opt_state = carry
        idx, w, images, labels = batch
        x, y = table[images[idx]], labels[idx]

        def loss_sum(p):
            ce = optax.softmax_cross_entropy_with_integer_labels(apply_fn({"params": p}, x), y)
            return jnp.sum(ce * w)

        total, grads = jax.value_and_grad(loss_sum)(params)
        count = jnp.sum(w) if setting.short_batch == "mean" else jnp.float32(setting.batch_size)
        grads = jax.tree.map(lambda g: g / count, grads)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), total

    def epoch(params, opt_state, images, labels, idx, w):
        n = idx.shape[0]
        (params, opt_state), losses = jax.lax.scan(
            lambda c, b: step(c, (b[0], b[1], images, labels)), (params, opt_state), (idx, w), length=n)
        return params, opt_state, jnp.sum(losses), jnp.sum(w)

    def evaluate(params, images, labels, weights):
        def body(_, batch):
            x, y, wb = batch
            logits = apply_fn({"params": params}, table[x])
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
            return None, (jnp.sum((jnp.argmax(logits, -1) == y) * wb), jnp.sum(ce * wb), jnp.sum(wb))

        _, (correct, loss, count) = jax.lax.scan(body, None, (images, labels, weights))
        return correct, loss, count

    train = jax.jit(jax.vmap(epoch, in_axes=(0, 0, None, None, 0, 0)))
    return tx, train, jax.jit(jax.vmap(evaluate, in_axes=(0, None, None, None)))


def _eval_batches(images: np.ndarray, labels: np.ndarray, batch: int):
    n = len(labels)
    steps = -(-n // batch)
    pad = steps * batch - n
    w = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)]).reshape(steps, batch)
    images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
    labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
    return images.reshape(steps, batch, *images.shape[1:]), labels.reshape(steps, batch), w


def train_seeds(setting: Setting, seeds: list[int], train: tuple, test: tuple) -> list[dict]:
    """Train one run per seed (all in one vmapped program) and return each run's per-epoch curves."""
    spec = ModelSpec(model=setting.model)
    model = build_model(spec)
    tx, train_epoch, evaluate = _make_functions(setting, model.apply)
    params = [init_params(setting, model, s) for s in seeds]
    params = jax.tree.map(lambda *xs: jnp.stack(xs), *params)
    opt_state = jax.vmap(tx.init)(params)
    images, labels = jnp.asarray(train[0]), jnp.asarray(train[1].astype(np.int32))
    ev_x, ev_y, ev_w = (jnp.asarray(a) for a in _eval_batches(test[0], test[1].astype(np.int32), setting.eval_batch))
    curves: list[list[dict]] = [[] for _ in seeds]
    for e in range(setting.epochs):
        packed = [orders.pack(orders.epoch_batches(setting.order, s, e, len(train[1]), setting.batch_size),
                              setting.batch_size) for s in seeds]
        idx = jnp.asarray(np.stack([p[0] for p in packed]))
        w = jnp.asarray(np.stack([p[1] for p in packed]))
        before = None
        if setting.probe:  # the same updates, cut before the last one to evaluate there too
            params, opt_state, loss_a, n_a = train_epoch(params, opt_state, images, labels, idx[:, :-1], w[:, :-1])
            before = np.asarray(evaluate(params, ev_x, ev_y, ev_w)[0]).sum(-1) / len(test[1])
            params, opt_state, loss_b, n_b = train_epoch(params, opt_state, images, labels, idx[:, -1:], w[:, -1:])
            train_loss = (loss_a + loss_b) / (n_a + n_b)
        else:
            params, opt_state, loss_sum, n = train_epoch(params, opt_state, images, labels, idx, w)
            train_loss = loss_sum / n
        correct, loss, count = (np.asarray(a) for a in evaluate(params, ev_x, ev_y, ev_w))
        for i in range(len(seeds)):
            if before is not None:
                curves[i].append({"val_acc_before_last_update": float(before[i])})
            else:
                curves[i].append({})
            curves[i][-1].update({
                "epoch": e + 1, "train_loss": float(train_loss[i]),
                "val_acc_example_weighted": float(correct[i].sum() / count[i].sum()),
                "val_acc_batch_mean": float(np.mean(correct[i] / count[i])),
                "val_loss_example_weighted": float(loss[i].sum() / count[i].sum()),
                "last_batch_size": int(w[i, -1].sum()),
            })
    return [{"seed": s, "epochs": c} for s, c in zip(seeds, curves)]
