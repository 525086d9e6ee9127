"""The book-comparison harness (benchmarks/book): the pieces that can be checked cheaply in the project's env.

Running the book's own code needs benchmarks/book/.venv (d2l 1.0.3); those checks skip elsewhere.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os

import numpy as np
import pytest

from benchmarks.book import idx, orders, record, results, stats
from mlp_research import batching
from mlp_research.data import PIXEL_VALUES


def _write_idx(path, array: np.ndarray) -> None:
    magic = bytes([0, 0, 0x08, array.ndim])
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(magic + dims + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_idx(tmp_path, monkeypatch):
    """Four IDX files of 7 train and 5 test images with known pixels and labels; BOOK_DATA_DIR points at them."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 7), ("test", 5)):
        arrays[split] = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8))
        _write_idx(tmp_path / idx.FILES[(split, "images")], arrays[split][0])
        _write_idx(tmp_path / idx.FILES[(split, "labels")], arrays[split][1])
    monkeypatch.setenv("BOOK_DATA_DIR", str(tmp_path))
    return arrays


def test_idx_reader_round_trips(tiny_idx):
    images, labels = idx.load_split("test")
    assert images.shape == (5, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, tiny_idx["test"][0])
    np.testing.assert_array_equal(labels, tiny_idx["test"][1])
    assert set(idx.sha256_files()) == set(idx.FILES.values())


def test_torchvision_standin_reads_the_idx_files_as_torchvision_would(tiny_idx):
    pytest.importorskip("torch")
    pytest.importorskip("PIL")
    from benchmarks.book import torchvision_standin as tv

    transform = tv.Compose([tv.Resize((28, 28)), tv.ToTensor()])
    data = tv.FashionMNIST(root="unused", train=True, transform=transform, download=True)
    assert len(data) == 7
    x, y = data[3]
    assert tuple(x.shape) == (1, 28, 28) and str(x.dtype) == "torch.float32" and isinstance(y, int)
    assert y == int(tiny_idx["train"][1][3])
    # The book's input equals the project's pixel table bit for bit (the pixel-scaling factor is zero).
    np.testing.assert_array_equal(x.numpy()[0], PIXEL_VALUES[tiny_idx["train"][0][3]])
    cached = tv.FashionMNIST(train=False, transform=transform)
    cached.cache_transformed = True
    first, again = cached[2][0], cached[2][0]
    assert again is first and np.array_equal(first.numpy(), data.__class__(train=False, transform=transform)[2][0])


def test_pixel_table_is_float32_division_by_255():
    expected = np.arange(256, dtype=np.float32) / np.float32(255)
    np.testing.assert_array_equal(PIXEL_VALUES, expected)


@pytest.mark.parametrize("kind", orders.ORDERS)
def test_every_data_order_is_a_partition_of_the_training_set(kind):
    n, b = 1000, 64
    batches = orders.epoch_batches(kind, seed=3, epoch=2, num_train=n, batch_size=b)
    drop = kind == "examples_drop_last"  # the short batch of 40 left out: 15 full batches
    assert len(batches) == (n // b if drop else -(-n // b))
    seen = np.sort(np.concatenate(batches))
    assert len(seen) == (n - n % b if drop else n) and len(np.unique(seen)) == len(seen) and seen.max() < n
    idx_, w = orders.pack(batches, b)
    assert idx_.shape == w.shape == (len(batches), b) and w.sum() == len(seen)


def test_data_orders_mean_what_they_say():
    n, b = 1000, 64  # 15 full batches and one of 40
    examples = orders.epoch_batches("examples", 1, 0, n, b)
    layout = batching.make_layout(n, b, 0)
    np.testing.assert_array_equal(np.concatenate(examples), batching.epoch_order(1, 0, layout, "examples")[:n])
    project = batching.step_batches(batching.epoch_order(1, 0, layout, "batches"), layout)
    assert {tuple(x) for x in project} == {tuple(x) for x in orders.epoch_batches("fixed_batches", 1, 0, n, b)}
    assert len(examples[-1]) == 40
    e0, e1 = (orders.epoch_batches("fixed_batches", 1, e, n, b) for e in (0, 1))
    assert {tuple(x) for x in e0} == {tuple(x) for x in e1}  # the same batches every epoch
    assert [tuple(x) for x in e0] != [tuple(x) for x in e1]  # in another order
    assert all(np.all(np.diff(x) == 1) for x in e0)  # contiguous runs of the file order
    assert len(orders.epoch_batches("fixed_batches_short_last", 1, 0, n, b)[-1]) == 40
    positions = {[len(x) for x in orders.epoch_batches("examples_short_random", 1, e, n, b)].index(40)
                 for e in range(8)}
    assert len(positions) > 1


def test_stats_summary_and_t_interval():
    s = stats.summarize([0.85, 0.86, 0.87])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.86) and s["std"] == pytest.approx(0.01)
    assert s["half_width"] == pytest.approx(4.303 * 0.01 / np.sqrt(3), rel=1e-3)
    assert s["ci95"][0] < 0.86 < s["ci95"][1]
    assert stats.t975(9) == pytest.approx(2.262, abs=1e-3)
    d = stats.difference([0.80, 0.81, 0.82], [0.85, 0.86, 0.87], paired=True)
    assert d["effect"] == pytest.approx(0.05) and d["ci95"][0] == pytest.approx(0.05)
    w = stats.difference([0.80, 0.81, 0.82], [0.85, 0.86, 0.88])
    assert w["test"] == "Welch t" and w["ci95"][0] < w["effect"] < w["ci95"][1]


def test_record_gives_the_books_batch_mean_and_the_example_weighted_accuracy():
    sizes = record.batch_sizes(10_000, 256)
    assert sizes == [256] * 39 + [16]
    accs = [0.75] * 39 + [1.0]  # an easy last batch of 16 lifts the book's mean, not the weighted one
    points = [("val_acc", 1.0, a) for a in accs] + [("val_loss", 1.0, 0.5)] * 40 + [("train_loss", 0.5, 1.0)]
    row = record.per_epoch(points, sizes, 1)[0]
    assert row["val_acc_batch_mean"] == pytest.approx((39 * 0.75 + 1) / 40)
    assert row["val_acc_example_weighted"] == pytest.approx((39 * 192 + 16) / 10_000)
    assert row["train_loss_batch_mean"] == 1.0


def test_torch_default_init_is_uniform_in_one_over_sqrt_fan_in():
    pytest.importorskip("flax")
    from benchmarks.book import loop
    from mlp_research.jax_backend.models import build_model
    from mlp_research.spec import ModelSpec

    setting = loop.Setting(model="mlp", init="torch_default")
    params = loop.init_params(setting, build_model(ModelSpec(model="mlp")), seed=0)
    for layer, fan_in in (("Dense_0", 784), ("Dense_1", 256)):
        for name in ("kernel", "bias"):
            v = np.asarray(params[layer][name])
            bound = 1 / np.sqrt(fan_in)
            assert np.abs(v).max() <= bound
            if name == "kernel":  # thousands of draws: they fill the interval, with a uniform's std
                assert np.abs(v).max() > 0.99 * bound and v.std() == pytest.approx(bound / np.sqrt(3), rel=0.02)
    with pytest.raises(ValueError):
        loop.init_params(loop.Setting(model="mlp_scratch", init="torch_default"), None, seed=0)


def test_stored_results_have_the_issue_schema():
    stored = os.path.join(results.RESULTS, "book_jax_mlp_scratch.json")
    if not os.path.exists(stored):
        pytest.skip("no stored book results")
    book = results.load()
    for fw in results.FRAMEWORKS:
        for model in results.MODELS:
            for side in ("book", "project"):
                cell = book[fw][model].get(side)
                if cell is None:
                    continue
                assert {"runs", "mean", "std", "ci95"} <= set(cell)
                assert len(cell["runs"]) >= 10 and cell["ci95"][0] <= cell["mean"] <= cell["ci95"][1]
                assert len(cell["curves"]["mean"]) == 10
    assert "data_order" in book["factors"] and "accuracy_averaging" in book["factors"]
    json.dumps(book)  # the report stores it as JSON


@pytest.mark.skipif(importlib.util.find_spec("d2l") is None, reason="needs the book's env (benchmarks/book/setup.sh)")
def test_book_jax_one_epoch_runs():
    from benchmarks.book import run

    out = run.run_one("jax", "mlp_scratch", seed=0, epochs=1)
    assert 0.6 < out["final_test_acc"] < 0.9 and out["board_val_acc"][0] == pytest.approx(out["final_test_acc"])


def test_the_published_results_name_no_absolute_path_of_this_machine():
    root = "/home/me/repo"
    stored = {"command": f"python -m x --data_dir=/home/me/data --out={root}/runs/a", "runs": [1, "/home/me/x"]}
    assert results.portable(stored, root) == {"command": "python -m x --data_dir=../data --out=runs/a",
                                              "runs": [1, "../x"]}
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(results.__file__))))
    assert os.path.dirname(repo) + os.sep not in json.dumps(results.load())  # the stored files do name them
