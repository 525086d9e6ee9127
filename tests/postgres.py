"""A real PostgreSQL server for the search tests: initdb and pg_ctl into a temporary directory, on 127.0.0.1.

The server runs as an unprivileged user (PostgreSQL refuses root): as root, the
Debian package's `postgres` user through `runuser`; otherwise the current user.
It listens on a free port of 127.0.0.1 only, with password authentication
(scram-sha-256) for the user `search`. `.ci/run` installs Debian's postgresql;
where its binaries are missing the tests skip with the reason (and fail under CI, which installs them).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

USER = "search"


def binaries() -> str | None:
    """The directory holding initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return os.path.dirname(os.path.realpath(found))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[-3]))
    return os.path.dirname(versions[-1]) if versions else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One PostgreSQL server in a temporary directory; `url(db)` without the password, `password` apart."""

    def __init__(self) -> None:
        self.bin = binaries()
        if self.bin is None:
            why = "PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install postgresql (.ci/run does)"
            (pytest.fail if os.environ.get("CI") else pytest.skip)(why)  # CI installs them: there it is a failure
        self.runas: list[str] = []
        if os.geteuid() == 0:
            user = next((u for u in ("postgres", "nobody") if _exists(u)), None)
            if user is None or shutil.which("runuser") is None:
                pytest.skip("running as root without a postgres user and runuser: cannot start PostgreSQL")
            self.runas = ["runuser", "-u", user, "--"]
        self.root = tempfile.mkdtemp(prefix="mlp-pg-")
        if self.runas:
            os.chown(self.root, pwd.getpwnam(self.runas[2]).pw_uid, -1)
        self.port, self.password = free_port(), "pw-" + secrets.token_hex(12)
        self.data, self.log = os.path.join(self.root, "data"), os.path.join(self.root, "server.log")

    def _run(self, *args: str, timeout: float = 60) -> None:
        # No pipes: the server inherits pg_ctl's output, and a pipe would stay open as long as the server runs.
        done = subprocess.run([*self.runas, *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=timeout)
        if done.returncode:
            log = open(self.log).read()[-2000:] if os.path.exists(self.log) else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed with exit {done.returncode}\n{log}")

    def start(self) -> "Server":
        pwfile = os.path.join(self.root, "pwfile")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        if self.runas:
            os.chown(pwfile, pwd.getpwnam(self.runas[2]).pw_uid, -1)
        self._run(os.path.join(self.bin, "initdb"), "-D", self.data, "-U", USER, f"--pwfile={pwfile}",
                  "-A", "scram-sha-256", "--no-sync")
        os.remove(pwfile)
        self.pg_ctl("start")
        return self

    def pg_ctl(self, action: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l", self.log, "-w", "-m", "fast",
                  "-o", options, action)

    def url(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=self.password,
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self.pg_ctl("stop")
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False


def wait_for(condition, timeout: float, what: str, poll: float = 0.1):
    """Poll `condition()` until it returns something true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
