"""Where a study lives: Optuna's own storages, with heartbeats, reconnection and a password that never shows.

- `sqlite:///W/study.db` (the default): the workers of one machine.
- `postgresql://USER@HOST:PORT/DB` (or any SQLAlchemy URL): Optuna's RDB storage, the engine that lets
  workers on several machines share one study. Its password may be in the URL, in
  `$MLP_RESEARCH_STORAGE_PASSWORD`, or in a file (`password_file`); it is handed to the driver in
  memory (`connect_args`), never written, and every URL shown is redacted (`redact`). libpq's own
  `PGPASSWORD`/`PGPASSFILE` work too.
- `journal:PATH`: Optuna's journal file storage, for machines that share a file system but no database.

Dead workers: each running trial sends heartbeats; a trial whose heartbeat stopped for `grace`
seconds is failed by the next worker that looks and retried with its parameters (Optuna's retry
callback). The RDB storage has this built in; the journal storage gets the same interface here,
its heartbeat kept as a trial system attribute.

A database that goes away (a restart, a network cut) costs no trial: each storage call that fails
for lack of a connection is retried for up to `reconnect_seconds`, after which the worker ends
with one line naming the storage (`StudyStorageError`), and a rerun continues the study.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
import warnings
from typing import Any, Callable

import optuna
from optuna.storages._heartbeat import BaseHeartbeat

from mlp_research.errors import ConfigError, StudyStorageError, warn

PASSWORD_ENV = "MLP_RESEARCH_STORAGE_PASSWORD"
JOURNAL = "journal:"
HEARTBEAT_ATTR = "heartbeat"
# Optuna 4.9 renamed the retry callback and its storage argument; older releases know only the first names.
RETRY = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
RETRY_ARGUMENT = ("heartbeat_stale_trial_callback" if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback")
                  else "failed_trial_callback")


@dataclasses.dataclass(frozen=True)
class StorageSettings:
    """How workers watch each other and wait for the database (seconds)."""

    heartbeat: int = 5
    grace: int = 60
    reconnect: int = 60
    max_retry: int = 2


def redact(url: str) -> str:
    """The URL with its password replaced by ***; anything that is not a URL with a password as it is."""
    if "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 -- not a URL SQLAlchemy reads: hide everything between :// and @
        head, _, rest = url.partition("://")
        return f"{head}://***@{rest.rsplit('@', 1)[1]}" if "@" in rest else url
    return parsed.render_as_string(hide_password=True) if parsed.password else url


def redact_argv(argv: list[str], password: str) -> list[str]:
    """A command line with every URL's password (as typed, maybe %-encoded) and the password itself hidden."""
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=") if arg.startswith("-") else ("", "", arg)
        value = redact(value) if "://" in value else value
        arg = f"{name}={value}" if eq else value
        out.append(arg.replace(password, "***") if password else arg)
    return out


def split_password(url: str, password_file: str = "") -> tuple[str, str]:
    """(the URL without its password, the password): from the URL, then `password_file`, then the environment."""
    password = ""
    if "://" in url:
        from sqlalchemy.engine import URL, make_url

        try:
            parsed = make_url(url)
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"--storage: {redact(url)} is not a database URL ({type(e).__name__})") from None
        if parsed.password:
            password = str(parsed.password)
            bare = URL.create(parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database,
                              parsed.query)
            url = bare.render_as_string(hide_password=False)
    if password_file:
        try:
            with open(password_file) as f:
                password = f.read().strip("\r\n")
        except OSError as e:
            raise ConfigError(f"--storage_password_file: cannot read {password_file} ({e.strerror})") from None
    return url, password or os.environ.get(PASSWORD_ENV, "")


def default_url(workdir: str) -> str:
    return f"sqlite:///{os.path.abspath(os.path.join(workdir, 'study.db'))}"


def dashboard_target(url: str) -> str:
    """What `optuna-dashboard` is given for this storage: the journal file, or the URL without its password."""
    return url[len(JOURNAL):] if url.startswith(JOURNAL) else split_password(url)[0] if "://" in url else url


def _disconnected(error: BaseException) -> bool:
    """A failure for lack of a connection (server down, restarting, unreachable), not a bad query."""
    import sqlalchemy.exc as sa

    for e in (error, error.__cause__):
        if isinstance(e, (sa.OperationalError, sa.InterfaceError)) or (
                isinstance(e, sa.DBAPIError) and e.connection_invalidated):
            return True
    return False


def _reconnecting(method: Callable) -> Callable:
    """`method` retried while the database is out of reach, for up to the storage's `reconnect_seconds`."""
    @functools.wraps(method)
    def call(self: "ReconnectingRDBStorage", *args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        while True:
            try:
                result = method(self, *args, **kwargs)
            except Exception as e:
                if not _disconnected(e):
                    raise
                if time.monotonic() - start >= self.reconnect_seconds:
                    raise StudyStorageError(f"the study's storage {self.shown_url} is unreachable "
                                            f"({_reason(e)}) for {self.reconnect_seconds} s; rerun the same "
                                            "command to continue the study") from None
                if not self.waiting:
                    self.waiting = True
                    warn(f"the study's storage {self.shown_url} is unreachable ({_reason(e)}); waiting up to "
                         f"{self.reconnect_seconds} s for it")
                time.sleep(1.0)
                continue
            if self.waiting and time.monotonic() > start:
                self.waiting = False
                warn(f"the study's storage {self.shown_url} is reachable again")
            return result

    return call


def _reason(error: BaseException) -> str:
    """The first line of the innermost cause (the driver's own words: "connection refused", ...)."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = str(error).splitlines()
    return " ".join(text[0].split())[:160] if text else type(error).__name__


class ReconnectingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose calls wait out a lost connection (see the module docstring)."""

    shown_url = ""
    reconnect_seconds = 60
    waiting = False  # an outage was announced; its end will be too

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            _reconnecting(optuna.storages.RDBStorage.record_heartbeat)(self, trial_id)
        except StudyStorageError:  # the heartbeat thread must not die noisily; the worker meets the outage itself
            pass


for _name in ("create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
              "get_study_id_from_name", "get_study_name_from_id", "get_study_directions", "get_study_user_attrs",
              "get_study_system_attrs", "get_all_studies", "create_new_trial", "set_trial_param",
              "get_trial_id_from_study_id_trial_number", "get_trial_number_from_id", "get_trial_param",
              "set_trial_state_values", "set_trial_intermediate_value", "set_trial_user_attr",
              "set_trial_system_attr", "get_trial", "get_all_trials", "get_n_trials", "get_best_trial",
              "_get_trials", "_get_stale_trial_ids"):
    if hasattr(optuna.storages.RDBStorage, _name):
        setattr(ReconnectingRDBStorage, _name, _reconnecting(getattr(optuna.storages.RDBStorage, _name)))


class HeartbeatJournalStorage(optuna.storages.JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with the heartbeat interface its RDB storage has (a time per running trial).

    The heartbeat is each worker's wall clock (the RDB storage uses the database's), so the machines sharing a
    journal need clocks that agree to within a fraction of the grace period (NTP does).
    """

    def __init__(self, path: str, settings: StorageSettings, callback: Callable) -> None:
        from optuna.storages.journal import JournalFileBackend

        super().__init__(JournalFileBackend(path))
        self.settings, self.callback = settings, callback

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except optuna.exceptions.UpdateFinishedTrialError:  # failed as stale by another worker meanwhile
            pass

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now, stale = time.time(), []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            started = t.datetime_start.timestamp() if t.datetime_start else now
            beat = max(float(t.system_attrs.get(HEARTBEAT_ATTR, 0.0)), started)  # a retry inherits an old beat
            if now - beat > self.settings.grace:
                stale.append(self.get_trial_id_from_study_id_trial_number(study_id, t.number))
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.settings.heartbeat

    def get_heartbeat_stale_trial_callback(self) -> Callable | None:
        return self.callback


def open_storage(url: str, password: str, settings: StorageSettings) -> optuna.storages.BaseStorage:
    """The storage behind `url` (checked: a storage that cannot be reached is a `StudyStorageError`)."""
    with warnings.catch_warnings():  # heartbeats and the retry callback are "experimental" in Optuna's terms
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RETRY(settings.max_retry, inherit_intermediate_values=True)
        if url.startswith(JOURNAL):
            return _journal(url[len(JOURNAL):], settings, retry)
        return _rdb(url, password, settings, retry)


def _journal(path: str, settings: StorageSettings, retry: Callable) -> HeartbeatJournalStorage:
    if not path:
        raise ConfigError("--storage: journal: needs a file path, e.g. journal:/shared/study.log")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return HeartbeatJournalStorage(path, settings, retry)
    except OSError as e:
        raise StudyStorageError(f"the study's storage journal:{path} cannot be opened ({e.strerror})") from None


def _rdb(url: str, password: str, settings: StorageSettings, retry: Callable) -> ReconnectingRDBStorage:
    import sqlalchemy.exc

    connect: dict[str, Any] = {}
    if url.startswith("sqlite"):
        connect["timeout"] = 120  # workers of one machine queue for SQLite's write lock
    else:
        connect["connect_timeout"] = 10
        if password:
            connect["password"] = password
    shown = redact(url)
    try:
        storage = ReconnectingRDBStorage(url, engine_kwargs={"connect_args": connect, "pool_pre_ping": True},
                                         heartbeat_interval=settings.heartbeat, grace_period=settings.grace,
                                         **{RETRY_ARGUMENT: retry})
    except (ImportError, sqlalchemy.exc.ArgumentError) as e:  # no driver, an unknown dialect
        raise ConfigError(f"--storage: no database driver for {shown} ({_reason(e)})") from None
    except Exception as e:  # noqa: BLE001 -- refused, unknown host, bad password, missing database, ...
        raise StudyStorageError(f"the study's storage {shown} cannot be reached: {_reason(e)}") from None
    storage.shown_url, storage.reconnect_seconds = shown, settings.reconnect
    return storage
