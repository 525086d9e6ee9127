"""The hand-written TensorBoard writer, read back by TensorBoard's own reader and HParams backend."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

# TensorBoard's stub TensorFlow (its own CRC-checking record reader) instead of importing TensorFlow (4 s):
# what `//tensorboard/compat:no_tensorflow` does in TensorBoard's own build. Both readers check CRCs.
if "tensorflow" not in sys.modules:
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing import event_accumulator, event_file_loader  # noqa: E402
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2  # noqa: E402

from mlp_research.run import tensorboard as tb  # noqa: E402

HPARAMS = {"lr": 0.05, "model": "mlp", "batch_size": 256, "test_at_end": False, "num_hiddens": [256, 128]}
EPOCHS = {1: (2.25, 0.5, 0.1), 2: (1.125, 0.625, 0.05), 3: (0.9876543, 0.71, 0.025)}  # train_loss, val_acc, lr


def write_run(logdir, hparams=HPARAMS, status="success", epochs=EPOCHS) -> str:
    writer = tb.ScalarWriter(str(logdir))
    writer.hparams(hparams)
    for epoch, (loss, acc, lr) in epochs.items():
        writer.scalar("train_loss", loss, epoch)
        writer.scalar("val_acc", acc, epoch)
        writer.scalar("learning_rate", lr, epoch)
        writer.flush()
    writer.session_end(status, step=max(epochs))
    writer.close()
    return writer.path


def accumulate(logdir) -> event_accumulator.EventAccumulator:
    acc = event_accumulator.EventAccumulator(str(logdir))
    acc.Reload()
    return acc


def plugin_data(acc, tag) -> plugin_data_pb2.HParamsPluginData:
    return plugin_data_pb2.HParamsPluginData.FromString(acc.PluginTagToContent("hparams")[tag])


def test_scalars_read_back_with_steps_and_float32_values(tmp_path):
    write_run(tmp_path)
    acc = accumulate(tmp_path)
    assert set(acc.Tags()["scalars"]) == {"train_loss", "val_acc", "learning_rate"}
    for column, tag in enumerate(("train_loss", "val_acc", "learning_rate")):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == list(EPOCHS)
        expected = [np.float32(values[column]) for values in EPOCHS.values()]
        assert [np.float32(e.value) for e in events] == expected


def test_hparams_session_start_keeps_each_kind(tmp_path):
    write_run(tmp_path)
    start = plugin_data(accumulate(tmp_path), "_hparams_/session_start_info")
    assert start.version == 0 and start.WhichOneof("data") == "session_start_info"
    values = start.session_start_info.hparams
    assert set(values) == set(HPARAMS)
    assert values["lr"].WhichOneof("kind") == "number_value" and values["lr"].number_value == 0.05
    assert values["batch_size"].number_value == 256
    assert values["model"].string_value == "mlp"
    assert values["test_at_end"].WhichOneof("kind") == "bool_value" and values["test_at_end"].bool_value is False
    assert values["num_hiddens"].string_value == "[256, 128]"
    assert start.session_start_info.start_time_secs > 1e9


@pytest.mark.parametrize("status, expected", [("success", api_pb2.STATUS_SUCCESS), ("failure", api_pb2.STATUS_FAILURE),
                                              ("unknown", api_pb2.STATUS_UNKNOWN)])
def test_session_end_status(tmp_path, status, expected):
    write_run(tmp_path, status=status)
    end = plugin_data(accumulate(tmp_path), "_hparams_/session_end_info").session_end_info
    assert end.status == expected and end.end_time_secs > 1e9


def test_resumed_run_keeps_one_session_ended_by_the_last_segment(tmp_path):
    """The driver's protocol: every segment starts the session, only the segment that finishes ends it."""
    first = tb.ScalarWriter(str(tmp_path))
    first.hparams(HPARAMS)
    first.scalar("val_acc", 0.5, 1)
    first.close()  # preempted: no session_end
    write_run(tmp_path, epochs={2: (1.0, 0.6, 0.1), 3: (0.9, 0.7, 0.1)})
    acc = accumulate(tmp_path)
    assert [e.step for e in acc.Scalars("val_acc")] == [1, 2, 3]
    assert plugin_data(acc, "_hparams_/session_end_info").session_end_info.status == api_pb2.STATUS_SUCCESS


def test_unknown_status_is_refused(tmp_path):
    writer = tb.ScalarWriter(str(tmp_path))
    with pytest.raises(ValueError, match="aborted"):
        writer.session_end("aborted")
    writer.close()


def test_records_pass_the_readers_crc_checks(tmp_path):
    """The reader stops at the first record whose CRC fails, so every record read back means every CRC passed."""
    path = write_run(tmp_path)
    records = list(event_file_loader.RawEventFileLoader(path).Load())
    assert len(records) == 1 + 1 + 3 * len(EPOCHS) + 1  # file version, session start, scalars, session end
    events = list(event_file_loader.EventFileLoader(path).Load())
    assert events[0].file_version == "brain.Event:2" and len(events) == len(records)
    data = bytearray(open(path, "rb").read())
    data[-5] ^= 0x01  # the last payload byte of the last record (the raw loader checks CRCs, it does not parse)
    open(path, "wb").write(bytes(data))
    assert len(list(event_file_loader.RawEventFileLoader(path).Load())) == len(records) - 1


def test_crc32c_check_value():
    assert tb._crc32c(b"123456789") == 0xE3069283  # the CRC-32C (Castagnoli) check value


def test_hparams_dashboard_lists_runs_comparably(tmp_path):
    """TensorBoard's HParams backend, as the dashboard queries it: one row per run, hparams and final metrics."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import backend_context, get_experiment, list_session_groups

    write_run(tmp_path / "a" / "tensorboard", {**HPARAMS, "lr": 0.05})
    write_run(tmp_path / "b" / "tensorboard", {**HPARAMS, "lr": 0.1}, status="failure",
              epochs={1: (2.0, 0.4, 0.1), 2: (1.5, 0.45, 0.1)})
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(tmp_path))
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, str(tmp_path))
    backend = backend_context.Context(base_plugin.TBContext(logdir=str(tmp_path), data_provider=provider,
                                                            multiplexer=mux))
    ctx = context.RequestContext()
    experiment = get_experiment.Handler(ctx, backend, "", api_pb2.GetExperimentRequest()).run()
    differs = {info.name: info.differs for info in experiment.hparam_infos}
    assert differs == {"lr": True, "model": False, "batch_size": False, "test_at_end": False, "num_hiddens": False}
    assert {m.name.tag for m in experiment.metric_infos} == {"train_loss", "val_acc", "learning_rate"}

    request = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=10, allowed_statuses=[
        api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_RUNNING])
    groups = {g.name: g for g in list_session_groups.Handler(ctx, backend, "", request).run().session_groups}
    assert set(groups) == {"a/tensorboard", "b/tensorboard"}
    assert groups["a/tensorboard"].hparams["lr"].number_value == 0.05
    assert groups["b/tensorboard"].hparams["lr"].number_value == 0.1
    final = {g: {m.name.tag: (m.training_step, m.value) for m in groups[g].metric_values} for g in groups}
    assert final["a/tensorboard"]["val_acc"] == (3, pytest.approx(0.71))
    assert final["b/tensorboard"]["val_acc"] == (2, pytest.approx(0.45))
    assert groups["b/tensorboard"].sessions[0].status == api_pb2.STATUS_FAILURE
