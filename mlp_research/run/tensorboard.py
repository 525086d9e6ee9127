"""A minimal TensorBoard event writer (scalars and hyperparameters) with no dependencies.

TensorBoard reads TFRecord files of `Event` protocol buffers. Scalars and the
HParams plugin's records need only a few small messages, encoded here by hand,
so a run writes event files without importing TensorFlow, tensorboard or
tensorboardX (the latter imports torch when it is installed: 1.5 s of start-up
for a few scalars).

HParams layout (what TensorBoard's HParams dashboard reads): a summary value
whose `metadata.plugin_data` has plugin_name "hparams" and, as content, a
serialized `HParamsPluginData` holding `session_start_info` or
`session_end_info`, under a fixed tag, with an empty float tensor as the value.
Each run writes its own session start (its hyperparameters) and end (its
status); TensorBoard derives the experiment (types, value ranges, which
hyperparameters differ, the metric columns) from all sessions in a logdir. It
keeps the first record of each tag in a run directory: a resumed run's second
session start is ignored, and a session must be ended once, when the run is over.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from typing import Mapping

HParamValue = str | float | int | bool

_PLUGIN = "hparams"
_SESSION_START_TAG = "_hparams_/session_start_info"
_SESSION_END_TAG = "_hparams_/session_end_info"
# tensorboard.hparams.Status; there is no "aborted": a stopped run that will resume is "unknown".
STATUSES = {"unknown": 0, "success": 1, "failure": 2, "running": 3}
# TensorProto{dtype: DT_FLOAT, tensor_shape: {dim: [{size: 0}]}}: the value TensorBoard stores hparams under.
_EMPTY_FLOAT_TENSOR = b"\x08\x01\x12\x02\x12\x00"

_CRC_TABLE: list[int] = []


def _crc32c(data: bytes) -> int:
    if not _CRC_TABLE:
        for i in range(256):
            crc = i
            for _ in range(8):
                crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
            _CRC_TABLE.append(crc)
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ------------------------------------------------------------ protobuf wire format
def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3 | 0) + _varint(value)


def _field_double(number: int, value: float) -> bytes:
    return _varint(number << 3 | 1) + struct.pack("<d", value)


def _field_float(number: int, value: float) -> bytes:
    return _varint(number << 3 | 5) + struct.pack("<f", value)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _field_str(number: int, text: str) -> bytes:
    return _field_bytes(number, text.encode())


# ------------------------------------------------------------ messages
def _event(wall_time: float, step: int, *, file_version: str | None = None,
           summary_value: bytes | None = None) -> bytes:
    """Event{wall_time=1, step=2, file_version=3, summary=5{value=1}}."""
    msg = _field_double(1, wall_time) + _field_varint(2, step)
    if file_version is not None:
        msg += _field_str(3, file_version)
    if summary_value is not None:
        msg += _field_bytes(5, _field_bytes(1, summary_value))
    return msg


def _scalar_value(tag: str, value: float) -> bytes:
    """Summary.Value{tag=1, simple_value=2}."""
    return _field_str(1, tag) + _field_float(2, value)


def _hparams_value(tag: str, plugin_data: bytes) -> bytes:
    """Summary.Value{tag=1, metadata=9{plugin_data=1{plugin_name=1, content=2}}, tensor=8}.

    `plugin_data` is an encoded HParamsPluginData without its version (field 1,
    whose only value, 0, is the default and so is not written).
    """
    metadata = _field_bytes(1, _field_str(1, _PLUGIN) + _field_bytes(2, plugin_data))
    return _field_str(1, tag) + _field_bytes(9, metadata) + _field_bytes(8, _EMPTY_FLOAT_TENSOR)


def _proto_value(value: HParamValue) -> bytes:
    """google.protobuf.Value{number_value=2, string_value=3, bool_value=4}; anything else as its str()."""
    if isinstance(value, bool):  # before int: bool is an int
        return _field_varint(4, int(value))
    if isinstance(value, (int, float)):
        return _field_double(2, float(value))
    return _field_str(3, value if isinstance(value, str) else str(value))


def _session_start(values: Mapping[str, HParamValue], start_time: float) -> bytes:
    """HParamsPluginData{session_start_info=3{hparams=1 (map entries {key=1, value=2}), start_time_secs=5}}."""
    entries = b"".join(_field_bytes(1, _field_str(1, name) + _field_bytes(2, _proto_value(value)))
                       for name, value in values.items())
    return _field_bytes(3, entries + _field_double(5, start_time))


def _session_end(status: int, end_time: float) -> bytes:
    """HParamsPluginData{session_end_info=4{status=1, end_time_secs=2}}."""
    return _field_bytes(4, _field_varint(1, status) + _field_double(2, end_time))


class ScalarWriter:
    """Appends scalar and hyperparameter summaries to a new `events.out.tfevents.*` file in `logdir`."""

    def __init__(self, logdir: str):
        os.makedirs(logdir, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self.path = os.path.join(logdir, name)
        self._file = open(self.path, "ab")
        self._write(_event(time.time(), 0, file_version="brain.Event:2"))

    def _write(self, record: bytes) -> None:
        header = struct.pack("<Q", len(record))
        self._file.write(header + struct.pack("<I", _masked_crc(header)) + record
                         + struct.pack("<I", _masked_crc(record)))

    def scalar(self, tag: str, value: float, step: int) -> None:
        self._write(_event(time.time(), step, summary_value=_scalar_value(tag, float(value))))

    def hparams(self, values: Mapping[str, HParamValue]) -> None:
        """Start this run's HParams session: its hyperparameters, shown as one row of the HParams dashboard.

        Strings, numbers and bools keep their kind; other values (a list of
        layer widths) are written as their str(). The metrics shown beside them
        are this run's scalars (their last values), so write those as usual.
        """
        now = time.time()
        self._write(_event(now, 0, summary_value=_hparams_value(_SESSION_START_TAG, _session_start(values, now))))
        self.flush()

    def session_end(self, status: str, step: int = 0) -> None:
        """End the session with a status from `STATUSES` (success, failure, running, unknown).

        Only when the run is over for good: TensorBoard keeps the first record
        of each tag in a run directory, so a session ended by a run that later
        resumes would keep that first status.
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        now = time.time()
        end = _hparams_value(_SESSION_END_TAG, _session_end(STATUSES[status], now))
        self._write(_event(now, step, summary_value=end))
        self.flush()

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()
