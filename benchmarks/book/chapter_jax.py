"""The chapter's JAX models (d2l 1.0.3, `d2l.jax`), trained by the book's own `d2l.Trainer`.

Runs only in the book's environment (benchmarks/book/.venv). Two patches make d2l 1.0.3 work here and
change nothing it computes: `jax.random.PRNGKeyArray` (removed from JAX; d2l's Trainer names it in a type
annotation) is restored as an alias of `jax.Array`, and `tf.keras.datasets.fashion_mnist.load_data` (which
downloads) returns the local IDX files as uint8 arrays, exactly what Keras would return.

Randomness: the book's Trainer draws its init key from Python's `random` (`d2l.get_key`), and its train
loader shuffles batches with tf.data (`.batch(256)...shuffle(235)`, reshuffled each epoch). `run` seeds both
from one integer: `random.seed(seed)` and `tf.random.set_seed(seed)`; one run per process.
"""

from __future__ import annotations

import os
import random
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore")

import jax  # noqa: E402

if not hasattr(jax.random, "PRNGKeyArray"):
    jax.random.PRNGKeyArray = jax.Array  # removed from JAX; d2l 1.0.3 annotates its TrainState with it

import tensorflow as tf  # noqa: E402
from d2l import jax as d2l  # noqa: E402
from flax import linen as nn  # noqa: E402
from jax import numpy as jnp  # noqa: E402

from benchmarks.book import idx, record  # noqa: E402

tf.keras.datasets.fashion_mnist.load_data = lambda: (idx.load_split("train"), idx.load_split("test"))


# --- The chapter's code, restated from d2l.ai "Implementation of Multilayer Perceptrons" (JAX tab). ---
class MLPScratch(d2l.Classifier):
    num_inputs: int
    num_outputs: int
    num_hiddens: int
    lr: float
    sigma: float = 0.01

    def setup(self):
        self.W1 = self.param('W1', nn.initializers.normal(self.sigma),
                             (self.num_inputs, self.num_hiddens))
        self.b1 = self.param('b1', nn.initializers.zeros, self.num_hiddens)
        self.W2 = self.param('W2', nn.initializers.normal(self.sigma),
                             (self.num_hiddens, self.num_outputs))
        self.b2 = self.param('b2', nn.initializers.zeros, self.num_outputs)


def relu(X):
    return jnp.maximum(X, 0)


@d2l.add_to_class(MLPScratch)
def forward(self, X):
    X = d2l.reshape(X, (-1, self.num_inputs))
    H = relu(d2l.matmul(X, self.W1) + self.b1)
    return d2l.matmul(H, self.W2) + self.b2


class MLP(d2l.Classifier):
    num_outputs: int
    num_hiddens: int
    lr: float

    @nn.compact
    def __call__(self, X):
        X = X.reshape((X.shape[0], -1))  # Flatten
        X = nn.Dense(self.num_hiddens)(X)
        X = nn.relu(X)
        X = nn.Dense(self.num_outputs)(X)
        return X
# --- end of the chapter's code ---


def make_model(name: str, lr: float = 0.1, num_hiddens: int = 256) -> d2l.Classifier:
    """The chapter's model as the chapter builds it."""
    if name == "mlp_scratch":
        return MLPScratch(num_inputs=784, num_outputs=10, num_hiddens=num_hiddens, lr=lr)
    return MLP(num_outputs=10, num_hiddens=num_hiddens, lr=lr)


def _shuffle_examples_dataloader(self, train):
    """d2l 1.0.3's FashionMNIST.get_dataloader (JAX) with one change: shuffle the examples, then batch (as the
    project and the book's PyTorch loader do), instead of batching, then shuffling the batches."""
    import tensorflow_datasets as tfds

    data = self.train if train else self.val
    process = lambda X, y: (tf.expand_dims(X, axis=3) / 255, tf.cast(y, dtype='int32'))  # noqa: E731
    resize_fn = lambda X, y: (tf.image.resize_with_pad(X, *self.resize), y)  # noqa: E731
    shuffle_buf = len(data[0]) if train else 1
    return tfds.as_numpy(tf.data.Dataset.from_tensor_slices(process(*data)).shuffle(shuffle_buf).batch(
        self.batch_size).map(resize_fn))


VARIANTS = {"shuffle_examples": _shuffle_examples_dataloader}


def run(model_name: str, seed: int, max_epochs: int = 10, batch_size: int = 256, variant: str | None = None) -> dict:
    """One training run of the chapter (model, d2l.FashionMNIST(256), d2l.Trainer(10)) and its per-epoch numbers.

    `variant` swaps one piece of the book's code for a controlled experiment (VARIANTS); None runs it as is."""
    if variant:
        d2l.FashionMNIST.get_dataloader = VARIANTS[variant]
    random.seed(seed)
    tf.random.set_seed(seed)
    model = make_model(model_name)
    points = record.attach(model.board)
    data = d2l.FashionMNIST(batch_size=batch_size)
    trainer = d2l.Trainer(max_epochs=max_epochs)
    trainer.fit(model, data)
    epochs = record.per_epoch(points, record.batch_sizes(len(data.val[1]), batch_size), max_epochs)
    return {"epochs": epochs, "board_val_acc": record.board_val_acc(model.board),
            "randomness": "random.seed(seed) -> d2l.get_key (init); tf.random.set_seed(seed) -> tf.data shuffle"}
