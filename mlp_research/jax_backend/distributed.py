"""Multi-process runs of the JAX backend: join the runtime, agree on decisions, never hang.

`join(launch)` runs `jax.distributed.initialize` for the launch that
`mlp_research.launchers` detected (gloo collectives on CPU, so two
processes on one machine test the path), with timeouts that bound every wait.

`agree(stop, save_due)` is the one collective the driver makes at each decision
point: without it, a SIGTERM reaching processes at different moments, or
clocks that disagree about a periodic save, leave some processes waiting
forever at a save barrier the others never reach.

When another process dies or hangs, JAX either raises from a collective or,
once its coordination service notices, aborts the process with a long C++ log.
Both end here as one line and `PeerProcessError.exit_code`: collective errors
are recognised (`peer_error`, `guard`), and while joined the process's stderr
passes through a filter that holds the runtime's log records back, with a
SIGABRT handler that prints one line instead when the runtime aborts.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import re
import signal
import sys
import threading
from typing import Iterator, NoReturn

from mlp_research import launchers
from mlp_research.errors import NonFiniteLossError, PeerProcessError, PreemptedError, StoppedBeforeCheckpointError
from mlp_research.launchers import Launch


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Seconds the runtime waits. A process that died or hangs is noticed within `heartbeat` (+ a few)."""

    initialization: int = 300  # for every process to start and connect (imports on a busy cluster are slow)
    heartbeat: int = 30  # a process silent this long is dead: the others stop with one line
    shutdown: int = 60  # at the end, for the others to finish (process 0 writes the outputs last)


# Errors every process raises at the same point (the driver agrees on stops; the loss is all-reduced):
# their processes meet at JAX's shutdown barrier. After any other error only this process ends, so it
# leaves at once (the others learn from their next collective) instead of waiting at a barrier they never reach.
COORDINATED = (PreemptedError, StoppedBeforeCheckpointError, NonFiniteLossError)

_COLLECTIVE_FAILURE = re.compile(r"Gloo \w+ failed|NCCL|Connection reset by peer|Connection closed by peer|"
                                 r"coordination service|heartbeat|Socket closed", re.IGNORECASE)


@dataclasses.dataclass
class _State:
    launch: Launch | None = None
    exit_code: int | None = None  # how this process is ending, once known
    coordinated: bool = True
    filter: "_StderrFilter | None" = None
    joining: str = ""  # while connecting: what to say if that fails


_state = _State()


def join(launch: Launch, timeouts: Timeouts = Timeouts()) -> Launch:
    """Join the runtime of a multi-process launch (nothing for one process); return it with its numbers.

    Must run before anything starts JAX's backends. A failure to connect (other
    processes missing after `timeouts.initialization`, a port in use) ends the
    process with one line and exit code 12.
    """
    _end_with_launcher(launch)
    if not launch.joins:
        return launch
    if _state.launch is not None:
        raise RuntimeError("distributed.join: this process already joined a run")
    import jax
    from jax._src import distributed as jax_distributed

    _state.launch = launch
    _state.filter = _StderrFilter()
    _install_abort_handler()
    atexit.register(_at_exit)  # after JAX's own exit hook, so it runs before it
    sys.excepthook = _excepthook(sys.excepthook)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices of different processes
    # JAX's preemption service takes SIGTERM away from Python (a C++ handler that only logs it);
    # the driver's own handler and `agree` stop every process at the same step instead.
    jax.config.update("jax_enable_preemption_service", False)
    if _is_loopback(launch.coordinator_address):
        _gloo_on_loopback()
    exact = {} if launch.delegated else {"local_device_ids": launchers.local_device_ids(launch),
                                         "cluster_detection_method": "deactivate"}
    _state.joining = (f"{launch.describe()}: could not join the run through "
                      f"{launch.coordinator_address or 'the detected coordinator'} (waiting up to "
                      f"{timeouts.initialization} s for all processes); are they all started, with the same "
                      "coordinator address and port?")
    try:
        jax.distributed.initialize(launch.coordinator_address, launch.num_processes, launch.process_id,
                                   initialization_timeout=timeouts.initialization,
                                   heartbeat_timeout_seconds=timeouts.heartbeat,
                                   shutdown_timeout_seconds=timeouts.shutdown, **exact)
    except Exception as e:  # noqa: BLE001 -- whatever stopped the connection, say it in one line
        _die(f"{_state.joining} ({_first_line(e)})")
    _state.joining = ""
    state = jax_distributed.global_state
    joined = dataclasses.replace(launch, num_processes=int(state.num_processes), process_id=int(state.process_id),
                                 coordinator_address=state.coordinator_address)
    _state.launch = joined
    return joined


PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent ends


def _end_with_launcher(launch: Launch) -> None:
    """Under mpirun, end when it ends: Open MPI gives each process a process group of its own and passes
    signals on itself, so an mpirun killed outright (SIGKILL, a crash) left them running, orphaned. The
    kernel's parent-death signal (Linux) ends them with it; the last checkpoint resumes, as after any kill -9.
    """
    if launch.launcher != "openmpi" or not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):  # no C library, or no prctl: nothing to bind to
        return
    if parent == 1 or os.getppid() != parent:  # mpirun ended before the signal was set up
        os.kill(os.getpid(), signal.SIGKILL)


def agree(stop: bool, save_due: bool) -> tuple[bool, bool]:
    """(stop requested by ANY process, the PRIMARY process's save decision), the same in every process.

    One small all-gather; with a single process, the inputs themselves.
    """
    if _state.launch is None:
        return bool(stop), bool(save_due)
    import numpy as np
    from jax.experimental import multihost_utils

    try:
        votes = np.asarray(multihost_utils.process_allgather(np.array([stop, save_due], dtype=np.int32)))
    except Exception as e:  # noqa: BLE001 -- a collective fails when a peer is gone
        raise (peer_error(e) or e) from None
    return bool(votes[:, 0].any()), bool(votes[0, 1])


def peer_error(exc: BaseException) -> PeerProcessError | None:
    """`exc` as a one-line `PeerProcessError` if it says another process is gone, else None."""
    if _state.launch is None:
        return None
    if isinstance(exc, PeerProcessError):
        error = exc
    elif not _COLLECTIVE_FAILURE.search(str(exc)):
        return None
    else:
        error = PeerProcessError(
            f"{_who()}: a collective with the other processes failed ({_first_line(exc)}): another process "
            "crashed, was killed or hangs; relaunch every process to resume from the last checkpoint")
    _state.exit_code, _state.coordinated = PeerProcessError.exit_code, False
    return error


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Around a joined process's work: a lost peer ends it at once with one line (exit 12).

    Also records how the work ended, so that an error only this process has
    skips the shutdown barrier the others would never reach.
    """
    try:
        yield
    except BaseException as e:
        failure = peer_error(e)
        if failure is not None:
            _die(str(failure))
        if _state.launch is not None:
            code = getattr(e, "exit_code", None) or (e.code if isinstance(e, SystemExit) else 1)
            _state.exit_code = code if isinstance(code, int) else 1
            _state.coordinated = isinstance(e, COORDINATED)
        raise
    else:
        _state.exit_code, _state.coordinated = 0, True


def _is_loopback(address: str | None) -> bool:
    host = (address or "").rsplit(":", 1)[0].strip("[]")
    return host == "localhost" or host.startswith("127.") or host == "::1"


def _gloo_on_loopback() -> None:
    """All processes are on this machine: keep gloo's connections on 127.0.0.1 too.

    Gloo otherwise listens on the address this machine's hostname resolves to,
    which need not be loopback (or reachable). JAX gives no option for it, so
    its factory gets the host as a default argument; skipped if that changed.
    """
    import functools

    from jax._src.lib import _jax

    make = getattr(_jax, "make_gloo_tcp_collectives", None)
    if make is not None and not isinstance(make, functools.partial):
        _jax.make_gloo_tcp_collectives = functools.partial(make, hostname="127.0.0.1")


def _who() -> str:
    launch = _state.launch
    return f"process {launch.process_id} of {launch.num_processes}" if launch else "this process"


def _first_line(exc: BaseException) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    text = re.sub(r"\[[\w/.\-]+\.(cc|h|cpp):\d+\]\s*", "", text)  # C++ source locations
    return text if len(text) <= 200 else text[:197] + "..."


def _die(message: str) -> NoReturn:
    """Print `error: message` as this process's only last word and exit with 12, skipping JAX's exit hooks."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    out = 2
    if _state.filter is not None:
        _state.filter.discard_runtime_log()
        out = _state.filter.original
    os.write(out, f"error: {message}\n".encode(errors="replace"))
    os._exit(PeerProcessError.exit_code)


def _excepthook(previous):
    def hook(kind, exc, tb):
        failure = peer_error(exc)
        if failure is not None:
            _die(str(failure))
        previous(kind, exc, tb)

    return hook


def _at_exit() -> None:
    """Leave at once after an error of this process alone; else meet the others at the shutdown barrier."""
    if _state.exit_code is not None and not _state.coordinated:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        if _state.filter is not None:
            _state.filter.close()
        os._exit(_state.exit_code)
    try:
        import jax

        jax.distributed.shutdown()  # now, while a failure of the barrier still ends in one line
    finally:
        if _state.filter is not None:
            _state.filter.close()


class _StderrFilter:
    """Routes fd 2 through a pipe; a thread forwards it, holding back the runtime's log from its first record.

    The coordination service's records (and everything after them) are held:
    released verbatim if the process goes on to exit normally, dropped when it
    ends with one line because another process is gone.
    """

    # An absl/glog record: "E1129 17:47:48.076258   24127 coordination_service.cc:1520] ..."
    RECORD = re.compile(rb"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+\s+([\w.\-]+):\d+\]")
    RUNTIME = re.compile(rb"coordination|preemption_sync|distributed service|heartbeat", re.IGNORECASE)

    def __init__(self) -> None:
        sys.stderr.flush()
        self.original = os.dup(2)
        self._read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self.held: list[bytes] = []
        self.failed = False  # a runtime record was seen: hold everything from there on
        self._partial = b""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._pump, name="stderr-filter", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            while chunk := os.read(self._read, 1 << 16):
                with self._lock:
                    self._consume(chunk)
        except OSError:  # BlockingIOError included: `take_available` made the pipe non-blocking, the process ends
            return

    def _consume(self, chunk: bytes) -> None:
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for line in lines:
            record = self.RECORD.match(line)
            if self.failed or (record and self.RUNTIME.search(line)):
                self.failed = True
                self.held.append(line)
            else:
                os.write(self.original, line + b"\n")

    def take_available(self) -> None:
        """Read what is in the pipe now (from a handler that cannot wait for the thread)."""
        if not self._lock.acquire(timeout=2):
            return
        try:
            os.set_blocking(self._read, False)  # the thread's next read fails and it ends: the process is ending
            while chunk := os.read(self._read, 1 << 16):
                self._consume(chunk)
        except OSError:  # BlockingIOError: the pipe is empty
            pass
        finally:
            self._lock.release()

    def discard_runtime_log(self) -> None:
        """Drop the held records, and hold back anything written from now on: the process is ending."""
        self.failed = True
        self.take_available()
        self.held.clear()

    def reason(self) -> str:
        text = b"\n".join(self.held).decode(errors="replace")
        dead = re.search(r"Task (\d+) heartbeat timeout|stopped sending heartbeats\):\s*(\d+)", text)
        if dead:
            return f"process {dead.group(1) or dead.group(2)} stopped answering (no heartbeat): it crashed, " \
                   "was killed or hangs"
        if re.search(r"Socket closed|Connection refused|failed to connect|UNAVAILABLE|DEADLINE_EXCEEDED", text):
            return "lost the coordinator (process 0): it crashed, was killed, hangs or is unreachable"
        if re.search(r"shutdown barrier", text, re.IGNORECASE):
            return "not every process reached the end of the run"
        return "the distributed runtime reports that another process failed"

    def close(self) -> None:
        """Restore fd 2 and forward what is left (held records included: the process ends normally)."""
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(self.original, 2)  # closes the pipe's last write end: the thread drains it and ends
        self._thread.join(timeout=5)
        with self._lock:
            rest = self.held + ([self._partial] if self._partial else [])
            self.held, self._partial = [], b""
        if rest:
            os.write(2, b"\n".join(rest) + b"\n")


_abort_handler = None  # the ctypes callback must outlive its installation
_libc = None


def _install_abort_handler() -> None:
    """On SIGABRT from the runtime's fatal log: one line and exit 12 (or this process's own exit code)."""
    global _abort_handler, _libc
    import ctypes

    try:
        _libc = ctypes.CDLL(None)
        _libc.signal.restype = ctypes.c_void_p
        _libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
    except (OSError, AttributeError):
        return  # no C library to install it with: the runtime's own abort stays as it is
    # A C-level handler: the runtime aborts from its own threads, where Python's signal module cannot act.
    _abort_handler = ctypes.CFUNCTYPE(None, ctypes.c_int)(_on_abort)
    _libc.signal(signal.SIGABRT, ctypes.cast(_abort_handler, ctypes.c_void_p).value)


def _on_abort(signum: int) -> None:
    try:
        f = _state.filter
        if f is not None:
            f.take_available()
            if f.failed:
                if _state.joining:
                    _die(_state.joining)
                if _state.exit_code is None:
                    _die(f"{_who()}: {f.reason()}; relaunch every process to resume from the last checkpoint")
                f.discard_runtime_log()
                os._exit(_state.exit_code)  # this process had already ended; its peers' state is theirs
            f.close()  # an abort of this process's own: show everything it printed
    except BaseException:  # noqa: BLE001 -- inside a signal handler: fall through to the real abort
        pass
    _libc.signal(signal.SIGABRT, None)  # SIG_DFL
    os.kill(os.getpid(), signal.SIGABRT)  # delivered when this handler returns
