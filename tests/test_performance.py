"""Speed options of the JAX core: matmul precision and the persistent compilation cache."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, tiny_config
from mlp_research.jax_backend.models import build_model
from mlp_research.run.checkpoints import config_differences
from mlp_research.run.driver import train_and_evaluate
from mlp_research.spec import ModelSpec


def _logits(spec: ModelSpec, precision: str, params, x):
    return np.asarray(jax.jit(lambda p, x: build_model(spec, precision).apply({"params": p}, x))(params, x))


@pytest.mark.parametrize("model_name", ["mlp_scratch", "mlp"])
def test_bfloat16_rounds_the_operands_and_accumulates_in_float32(model_name):
    spec = ModelSpec(model=model_name, num_hiddens=(64,))
    x = jnp.asarray(np.random.default_rng(0).random((32, 28, 28), np.float32))
    params = build_model(spec).init(jax.random.PRNGKey(0), x)["params"]
    full = _logits(spec, "default", params, x)
    low = _logits(spec, "bfloat16", params, x)
    assert low.dtype == np.float32

    # The reference: every matmul operand rounded to bfloat16, the products summed in float64.
    def bf16(a):
        return np.asarray(jnp.asarray(a, jnp.bfloat16).astype(jnp.float32), np.float64)

    leaves = [np.asarray(v) for v in jax.tree.leaves(params)]
    if model_name == "mlp_scratch":
        w1, w2, b1, b2 = (params[k] for k in ("W1", "W2", "b1", "b2"))
    else:
        w1, b1 = params["Dense_0"]["kernel"], params["Dense_0"]["bias"]
        w2, b2 = params["Dense_1"]["kernel"], params["Dense_1"]["bias"]
    assert len(leaves) == 4
    h = np.maximum(bf16(np.asarray(x).reshape(32, -1)) @ bf16(w1) + np.asarray(b1), 0)
    reference = bf16(h) @ bf16(w2) + np.asarray(b2)
    scale = np.abs(reference).max()
    assert np.abs(low - reference).max() < 1e-5 * scale
    assert np.abs(full - reference).max() > 1e-3 * scale  # it really is a different computation


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="GPUs honour the request (default there is TF32)")
@pytest.mark.parametrize("precision", ["float32", "tensorfloat32"])
def test_precision_requests_leave_cpu_results_unchanged(precision):
    """CPUs compute float32 matmuls at full precision whatever is requested; GPUs honour the request."""
    spec = ModelSpec(model="mlp", num_hiddens=(64,))
    x = jnp.asarray(np.random.default_rng(1).random((16, 784), np.float32))
    params = build_model(spec).init(jax.random.PRNGKey(1), x)["params"]
    assert np.array_equal(_logits(spec, precision, params, x), _logits(spec, "default", params, x))


@pytest.mark.parametrize("model_name", ["mlp_scratch", "mlp"])
def test_bfloat16_backward_matmuls_are_bfloat16_too(model_name):
    """Autodiff of a bfloat16 forward would multiply the float32 gradient at full precision; ours does not."""
    import optax

    spec = ModelSpec(model=model_name, num_hiddens=(32, 16))
    x, y = jnp.zeros((8, 28, 28)), jnp.arange(8) % 10
    params = build_model(spec).init(jax.random.PRNGKey(0), x)["params"]
    net = build_model(spec, "bfloat16")

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(net.apply({"params": p}, x), y).mean()

    dots = [line for line in jax.jit(jax.grad(loss)).lower(params).as_text().splitlines() if "dot_general" in line]
    assert len(dots) == 3 + 3 + 2  # forward per layer, weight gradient per layer, input gradient of layers 2-3
    assert all(re.search(r"\(tensor<[0-9x]+xbf16>, tensor<[0-9x]+xbf16>\) -> tensor<[0-9x]+xf32>", d) for d in dots)


def test_bfloat16_run_learns_close_to_float32(tmp_path):
    """Mixed precision trains: its accuracy stays near the float32 run's (the cost is reported, not hidden)."""
    full = train_and_evaluate(tiny_config(max_epochs=3), str(tmp_path / "f32"))
    low = train_and_evaluate(tiny_config(max_epochs=3, matmul_precision="bfloat16"), str(tmp_path / "bf16"))
    assert low["config"]["matmul_precision"] == "bfloat16"
    assert low["final"]["train_loss"] != full["final"]["train_loss"]
    assert abs(low["final"]["val_acc"] - full["final"]["val_acc"]) < 0.05
    assert all(v.dtype == np.float32 for v in low["params"].values())


def test_precision_is_part_of_what_a_checkpoint_computes():
    """Changing precision refuses a resume; an old checkpoint without the field means the default."""
    old = {k: v for k, v in tiny_config().as_dict().items() if k not in ("matmul_precision", "compilation_cache_dir")}
    assert config_differences(old, tiny_config().as_dict()) == []
    assert config_differences(old, tiny_config(compilation_cache_dir="/tmp/x").as_dict()) == []
    assert config_differences(old, tiny_config(matmul_precision="bfloat16").as_dict()) == [
        "matmul_precision: 'default' -> 'bfloat16'"
    ]


# A run in a fresh process that reports the persistent-cache hits JAX records.
_COUNT_CACHE_HITS = """
import json, sys
import jax.monitoring
hits = []
jax.monitoring.register_event_listener(lambda event, **kw: hits.append(event) if event.endswith("cache_hits") else None)
from experiments import train
from mlp_research import cli
import atexit
atexit.register(lambda: print(json.dumps({"cache_hits": len(hits)})))  # cli.run leaves through the exit hooks
sys.argv = ["train", *sys.argv[1:]]
cli.run(train.main)
"""


def test_warm_compilation_cache_skips_compiling(tmp_path):
    cache = tmp_path / "cache"
    flags = ["--dataset=synthetic", "--synthetic_train_size=1000", "--synthetic_test_size=300", "--batch_size=64",
             "--max_epochs=1", "--progress=false", f"--compilation_cache_dir={cache}"]
    results = []
    for run in ("cold", "warm"):
        done = subprocess.run([sys.executable, "-c", _COUNT_CACHE_HITS, *flags, f"--workdir={tmp_path / run}"],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        summary = json.load(open(tmp_path / run / "summary.json"))
        results.append((json.loads(done.stdout.strip().splitlines()[-1])["cache_hits"], summary))
    (cold_hits, cold), (warm_hits, warm) = results
    entries = os.listdir(cache)
    assert any("train_chunk" in name for name in entries) and any("evaluate" in name for name in entries)
    assert cold_hits == 0 and warm_hits >= 3  # init, the training chunk and the evaluation come from disk
    assert warm["final"] == cold["final"]  # a cached program computes the same thing
    assert warm["config"]["compilation_cache_dir"] == str(cache)


# Trains the tiny config in a fresh process and prints XLA_FLAGS and the final parameters' checksum.
_TRAIN_AND_REPORT = """
import json, os, sys, tempfile
sys.path.insert(0, "tests")
from conftest import tiny_config
from mlp_research.run.driver import train_and_evaluate
with tempfile.TemporaryDirectory() as workdir:
    result = train_and_evaluate(tiny_config(), workdir)
print(json.dumps({"xla_flags": os.environ.get("XLA_FLAGS", ""),
                  "params": {k: float(v.astype("float64").sum()) for k, v in result["params"].items()},
                  "final": result["final"]}))
"""


def _train_in_fresh_process(xla_flags: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    done = subprocess.run([sys.executable, "-c", _TRAIN_AND_REPORT], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_cpu_scheduler_flag_is_added_respects_the_user_and_changes_no_result():
    tuned = _train_in_fresh_process(None)
    assert tuned["xla_flags"] == "--xla_cpu_enable_concurrency_optimized_scheduler=false"
    mine = _train_in_fresh_process("--xla_cpu_enable_concurrency_optimized_scheduler=true")
    assert mine["xla_flags"] == "--xla_cpu_enable_concurrency_optimized_scheduler=true"  # left alone
    assert tuned["params"] == mine["params"] and tuned["final"] == mine["final"]  # bit for bit


def test_next_epoch_order_is_prefetched_and_never_used_for_another_epoch():
    from mlp_research.batching import epoch_order
    from mlp_research.data import load_splits
    from mlp_research.jax_backend.backend import JaxBackend

    config = tiny_config(steps_per_chunk=5)  # 1000 examples, batch 64: 16 steps in chunks of 5, 5, 5, 1
    trainer = JaxBackend().trainer(config, load_splits(config))
    layout = trainer.layout
    trainer.start_epoch(0)
    for chunk in range(layout.chunks_per_epoch - 1):
        trainer.train_chunk(chunk)
        assert trainer._next_order is None  # only the epoch's last chunk prefetches
    trainer.train_chunk(layout.chunks_per_epoch - 1)
    assert trainer._next_order[0] == 1
    trainer.start_epoch(3)  # e.g. a resume elsewhere: the prefetched epoch-1 order must not be used
    assert np.array_equal(np.asarray(trainer.order), epoch_order(config.seed, 3, layout))
    for chunk in range(layout.chunks_per_epoch):
        trainer.train_chunk(chunk)
    trainer.start_epoch(4)
    assert np.array_equal(np.asarray(trainer.order), epoch_order(config.seed, 4, layout))
    assert trainer.epoch_sums().count == 0


def test_bfloat16_checkpoint_evaluates_in_another_backend(tmp_path):
    """Other frameworks evaluate a reduced-precision checkpoint at their own precision, not refusing it."""
    pytest.importorskip("mlp_research_torch")
    from mlp_research.run.evaluation import evaluate_checkpoint

    train_and_evaluate(tiny_config(max_epochs=1, matmul_precision="bfloat16"), str(tmp_path))
    in_jax = evaluate_checkpoint(str(tmp_path))
    in_torch = evaluate_checkpoint(str(tmp_path), backend="torch")
    assert abs(in_torch["test_acc"] - in_jax["test_acc"]) <= 0.02  # float32 against bfloat16 matmuls


def test_unusable_cache_directory_exits_2_naming_the_flag_and_leaves_no_workdir(tmp_path):
    (tmp_path / "a_file").write_text("")
    done = subprocess.run([sys.executable, "-m", "experiments.train", "--dataset=synthetic", "--max_epochs=1",
                           "--synthetic_train_size=600", f"--workdir={tmp_path / 'w'}",
                           f"--compilation_cache_dir={tmp_path / 'a_file'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith("error: --compilation_cache_dir: cannot use ")
    assert not (tmp_path / "w").exists()


def test_uint8_pixels_on_the_device_train_exactly_as_float_images():
    """The core keeps a quarter of the bytes on the device and computes the same, bit for bit."""
    import dataclasses

    from mlp_research.data import Splits, load_splits
    from mlp_research.jax_backend.backend import JaxBackend

    config = tiny_config(steps_per_chunk=5)
    with_pixels = load_splits(config)
    floats = Splits(*(dataclasses.replace(s, pixels=None) for s in (with_pixels.train, with_pixels.eval,
                                                                     with_pixels.test)), source="floats")
    results = []
    for splits in (with_pixels, floats):  # one process: the compiled-program cache must tell them apart
        trainer = JaxBackend().trainer(config, splits)
        trainer.start_epoch(0)
        for chunk in range(trainer.layout.chunks_per_epoch):
            trainer.train_chunk(chunk)
        results.append((trainer.train_data[0].dtype, trainer.epoch_sums(), trainer.evaluate_eval_split(),
                        trainer.get_params()))
    (dtype_a, *a), (dtype_b, *b) = results
    assert (dtype_a, dtype_b) == (np.uint8, np.float32)
    assert a[:2] == b[:2]
    assert all(np.array_equal(a[2][k], b[2][k]) for k in a[2])


@pytest.mark.parametrize("model_name", ["mlp_scratch", "mlp"])
@pytest.mark.parametrize("precision", ["float32", "tensorfloat32"])
def test_precision_request_reaches_every_matmul_forward_and_backward(model_name, precision):
    """nn.Dense passes its own precision (None) to dot_general; the run's request must still apply."""
    spec = ModelSpec(model=model_name, num_hiddens=(32,))
    net = build_model(spec, precision)
    x = jnp.zeros((8, 28, 28), jnp.float32)
    params = net.init(jax.random.PRNGKey(0), x)["params"]
    loss = lambda p: jnp.square(net.apply({"params": p}, x)).sum()  # noqa: E731
    text = jax.jit(jax.grad(loss)).lower(params).as_text()
    dots = [line for line in text.splitlines() if "dot_general" in line and "precision" in line]
    want = {"float32": "HIGHEST", "tensorfloat32": "HIGH"}[precision]
    assert len(dots) == 5  # two forward, one input gradient (of layer 2), two weight gradients
    assert all(f"[{want}, {want}]" in line for line in dots), dots


@pytest.mark.parametrize("model_name", ["mlp_scratch", "mlp"])
def test_weight_gradients_match_backpropagation_and_avoid_the_slow_narrow_form(model_name):
    """The output layer's weight gradient runs as (g.T @ x).T: the float64 reference's values, and on a CPU
    a standard-layout matmul, never the batch-contracting form XLA gives Eigen (slow for 10 columns)."""
    from mlp_research.jax_backend import models
    from mlp_research.jax_backend.models import from_canonical, to_canonical
    from mlp_research.testing import reference

    spec = ModelSpec(model=model_name, num_hiddens=(64,))
    net = build_model(spec)
    rng = np.random.default_rng(0)
    x, y = rng.random((128, 28, 28), np.float32), rng.integers(0, 10, 128)
    canonical = reference.init_params(ModelSpec(model=model_name, num_hiddens=(64,), init="he"), rng)
    params = from_canonical(spec, {k: v.astype(np.float32) for k, v in canonical.items()})

    def loss(p):
        logits = net.apply({"params": p}, jnp.asarray(x))
        return -jnp.take_along_axis(jax.nn.log_softmax(logits), jnp.asarray(y)[:, None], 1).mean()

    grad = jax.jit(jax.grad(loss))
    _, want = reference.loss_and_grads(spec, canonical, x, y)
    for name, got in to_canonical(spec, grad(params)).items():
        np.testing.assert_allclose(got, want[name], rtol=1e-4, atol=1e-6, err_msg=name)
    assert models.NARROW_OUTPUT > spec.num_outputs
    if jax.default_backend() == "cpu":
        compiled = grad.lower(params).compile().as_text()
        narrow = [line for line in compiled.splitlines() if " dot(" in line and "lhs_contracting_dims={0}" in line
                  and re.search(r"= f32\[\d+,\d\]", line)]
        assert not narrow, narrow


def _compiled_train_chunk(model_name: str, precision: str, num_hiddens: tuple[int, ...]) -> str:
    """The optimised HLO of a real training chunk (the JAX core's own placement and step)."""
    from mlp_research.data import load_splits
    from mlp_research.jax_backend.backend import JaxBackend

    config = tiny_config(model=model_name, num_hiddens=num_hiddens, batch_size=128, matmul_precision=precision)
    trainer = JaxBackend().trainer(config, load_splits(config))
    program = trainer.placement.train_fn(trainer.model.apply, trainer.tx, trainer.layout)
    return program.lower(trainer.state, *trainer.train_data, trainer.order, jnp.int32(0)).compile() \
        .as_text()


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the layout rule is XLA:CPU's")
@pytest.mark.parametrize("model_name", ["mlp_scratch", "mlp"])
def test_bfloat16_training_runs_every_large_matmul_on_the_fast_bfloat16_kernel(model_name):
    """Forward, input and weight gradients: bfloat16 operands, float32 products, the plain row-major form, and a
    library kernel. A transposed operand (how autodiff writes x.T @ g and g @ w.T) makes XLA:CPU compute the
    dot in float32 on a slower path, which is what this test is here to catch."""
    from mlp_research.jax_backend import hlo

    dots = hlo.large_dots(_compiled_train_chunk(model_name, "bfloat16", (256, 128)))
    # per layer of 784-256-128-10 with all dimensions >= 64: forward 1-2, weight gradient 1-2, input gradient 2
    assert len(dots) == 5, [d.describe() for d in dots]
    for dot in dots:
        assert (dot.lhs.dtype, dot.rhs.dtype, dot.out.dtype) == ("bf16", "bf16", "f32"), dot.describe()
        assert dot.standard_form and dot.library, dot.describe()


def test_pixels_become_the_same_bfloat16_inputs_as_the_exact_table_for_every_value():
    """The bfloat16 path converts pixels by multiplication (it vectorises); rounded to bfloat16 that equals the
    exact float32 table rounded to bfloat16, for all 256 pixel values, as compiled on this device."""
    from mlp_research.data import PIXEL_VALUES
    from mlp_research.jax_backend.models import model_inputs

    pixels = jnp.arange(256, dtype=jnp.uint8).reshape(1, 256)
    fast = jax.jit(lambda p: model_inputs(p, "bfloat16"))(pixels)
    assert fast.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(fast, np.float32)[0],
                                  np.asarray(jnp.asarray(PIXEL_VALUES).astype(jnp.bfloat16), np.float32))
    exact = jax.jit(lambda p: model_inputs(p, "default"))(pixels)
    np.testing.assert_array_equal(np.asarray(exact)[0], PIXEL_VALUES)  # float32: the table, bit for bit
