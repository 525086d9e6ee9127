"""The chapter's two TensorFlow models, generalised by `ModelSpec`.

`MLPScratch` is the book's from-scratch code: weights as `tf.Variable`s drawn
as `tf.random.normal(shape) * sigma`, zero biases, a hand-written relu
`tf.math.maximum(X, 0)` and the input reshaped to (-1, num_inputs). The book
relies on a Keras Model tracking plain `tf.Variable` attributes, which Keras 3
no longer does, so the variables are also kept in an explicit list.
`MLPConcise` is the book's `tf.keras.Sequential([Flatten, Dense(relu), Dense])`.

Both expose `variables`: the underlying `tf.Variable`s in canonical order
(W1, b1, W2, b2, ...; Keras Dense kernels are already (fan_in, fan_out)), which
is all the trainer and the canonical layout need.
"""

from __future__ import annotations

from typing import Any, Callable

from mlp_research.spec import ModelSpec
from mlp_research_tensorflow._tf import tf

keras = tf.keras


def relu(X: Any) -> Any:
    """The book's hand-written ReLU."""
    return tf.math.maximum(X, 0)


# Same functions as mlp_research.jax_backend.models.ACTIVATIONS: JAX's gelu is the tanh
# approximation and its leaky_relu slope is 0.01 (TensorFlow's defaults differ).
ACTIVATIONS: dict[str, Callable[[Any], Any]] = {
    "relu": tf.nn.relu,
    "sigmoid": tf.math.sigmoid,
    "tanh": tf.math.tanh,
    "gelu": lambda x: tf.nn.gelu(x, approximate=True),
    "silu": tf.nn.silu,
    "leaky_relu": lambda x: tf.nn.leaky_relu(x, alpha=0.01),
    "elu": tf.nn.elu,
    "softplus": tf.math.softplus,
    "identity": tf.identity,
}


def keras_initializer(spec: ModelSpec, seed: int, layer: int) -> Any:
    """The Keras kernel initialiser for `spec.init`, seeded per layer.

    Keras 3's He/LeCun/Glorot normal initialisers draw from a truncated normal
    rescaled to the untruncated variance, exactly as Flax's do.
    `default` is Keras's own Dense default (Glorot uniform), as the book's concise model uses.
    """
    s = (seed * 1009 + layer) % (2**31 - 1)  # a distinct, reproducible seed per layer
    init = keras.initializers
    return {
        "default": lambda: init.GlorotUniform(seed=s),
        "normal": lambda: init.RandomNormal(mean=0.0, stddev=spec.sigma, seed=s),
        "xavier": lambda: init.GlorotUniform(seed=s),
        "xavier_normal": lambda: init.GlorotNormal(seed=s),
        "he": lambda: init.HeNormal(seed=s),
        "he_uniform": lambda: init.HeUniform(seed=s),
        "lecun": lambda: init.LecunNormal(seed=s),
        "zeros": lambda: init.Zeros(),
    }[spec.init]()


class MLPScratch:
    """From-scratch MLP: W1, b1, W2, b2, ... as plain `tf.Variable`s."""

    def __init__(self, spec: ModelSpec, seed: int, precision: str = "default"):
        self.spec = spec
        self.bfloat16 = precision == "bfloat16"
        self.activation = relu if spec.activation == "relu" else ACTIVATIONS[spec.activation]
        self.variables: list[Any] = []
        for layer, (name, shape) in enumerate(spec.canonical_shapes().items()):
            if name.startswith("W"):
                value = self._initial_weight(shape, seed, layer // 2)
            else:
                value = tf.zeros(shape)
            variable = tf.Variable(value, name=name)
            setattr(self, name, variable)  # self.W1 as in the book; the list is what is trained
            self.variables.append(variable)

    def _initial_weight(self, shape: tuple[int, ...], seed: int, layer: int) -> Any:
        if self.spec.init in ("default", "normal"):
            # The book's tf.random.normal(shape) * sigma, made stateless so a seed fixes it.
            return tf.random.stateless_normal(shape, seed=[seed, layer]) * self.spec.sigma
        return keras_initializer(self.spec, seed, layer)(shape, dtype="float32")

    def __call__(self, X: Any) -> Any:
        X = tf.reshape(X, (-1, self.spec.num_inputs))
        last = self.spec.num_layers - 1
        for i in range(self.spec.num_layers):
            X = self._matmul(X, self.variables[2 * i]) + self.variables[2 * i + 1]
            if i < last:
                X = self.activation(X)
        return X


    def _matmul(self, X: Any, W: Any) -> Any:
        """X @ W; with bfloat16, both operands rounded to bfloat16 and the product returned as float32."""
        if not self.bfloat16:
            return tf.matmul(X, W)
        return tf.cast(tf.matmul(tf.cast(X, tf.bfloat16), tf.cast(W, tf.bfloat16)), tf.float32)


class MLPConcise:
    """Concise MLP: `tf.keras.Sequential([Flatten, Dense(h, activation), ..., Dense(o)])`.

    With bfloat16, every layer takes Keras's `mixed_bfloat16` policy (float32 weights, bfloat16
    computation: matmuls, bias adds and activations), the idiomatic Keras form; the logits are
    returned as float32.
    """

    def __init__(self, spec: ModelSpec, seed: int, precision: str = "default"):
        self.spec = spec
        policy = "mixed_bfloat16" if precision == "bfloat16" else None
        layers: list[Any] = [keras.layers.Flatten()]
        activation = ACTIVATIONS[spec.activation]
        for i, width in enumerate((*spec.num_hiddens, spec.num_outputs)):
            hidden = i < len(spec.num_hiddens)
            layers.append(keras.layers.Dense(
                width, activation=activation if hidden else None,
                kernel_initializer=keras_initializer(spec, seed, i), bias_initializer="zeros", dtype=policy,
            ))
        self.net = keras.Sequential(layers)
        self.net.build((None, 28, 28))
        # Keras 3 wraps each weight; the tf.Variable inside is what tapes and assigns use.
        self.variables = [v.value for v in self.net.trainable_variables]

    def __call__(self, X: Any) -> Any:
        return tf.cast(self.net(X), tf.float32)


def build_model(spec: ModelSpec, seed: int, precision: str = "default") -> MLPScratch | MLPConcise:
    """The spec's model; `precision` is the run's --matmul_precision (default or bfloat16)."""
    return (MLPScratch if spec.model == "mlp_scratch" else MLPConcise)(spec, seed, precision)
