"""A throwaway PostgreSQL server for tests and benchmarks: real, on 127.0.0.1, free port.

``PostgresServer`` runs Debian's ``initdb``/``pg_ctl`` (``/usr/lib/postgresql/<ver>/bin``) on a
data directory in a fresh temporary directory, and removes everything when stopped. As root
(CI, containers), the server runs as the ``postgres`` user, since PostgreSQL refuses root.

Authentication: the superuser ``postgres`` is trusted (no password); the role ``app``
(password ``APP_PASSWORD``, created by `setup`) must use SCRAM over TCP, so a wrong password
really fails. Nothing is skipped: if the server cannot start, `start` raises with its log.

    with PostgresServer() as pg:          # initdb + start + the app role + database "test"
        dsn = pg.dsn()                     # superuser DSN
        pg.stop(); pg.start()              # a restart on the same port
        pg.pause(); pg.resume()            # SIGSTOP / SIGCONT: up, but not answering
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import inspect
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

__all__ = [
    "APP_PASSWORD",
    "APP_USER",
    "DATABASE",
    "PostgresServer",
    "pg_bin",
    "run",
    "sessions",
    "settle",
    "wait_until",
]

T = TypeVar("T")

APP_USER = "app"
APP_PASSWORD = "s3cr%t-P@ss/word"  # URL-hostile on purpose: DSNs must encode it
DATABASE = "test"
SUPERUSER = "postgres"


def pg_bin() -> Path:
    """The newest installed PostgreSQL's bin directory (``make services`` installs one)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name.split(".")[0]),
    )
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
            "run `make services` (apt-get install postgresql)"
        )
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory; see the module docstring."""

    def __init__(self, port: int | None = None) -> None:
        self.bin = pg_bin()
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.root = Path(tempfile.mkdtemp(prefix="admission-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "server.log"
        self._as_postgres = os.geteuid() == 0
        self._initialized = False
        self._paused = False

    # ------------------------------------------------------------------ processes

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self._as_postgres:
            cmd = ["runuser", "-u", SUPERUSER, "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
                f"\n--- server log ---\n{self.server_log()}"
            )
        return result

    def server_log(self) -> str:
        try:
            return self.log.read_text()[-4000:]
        except OSError:
            return "(no log)"

    def init(self) -> None:
        """``initdb`` and the configuration; the server is not started."""
        if self._as_postgres:
            entry = pwd.getpwnam(SUPERUSER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.sockets.mkdir()
        if self._as_postgres:
            os.chown(self.sockets, entry.pw_uid, entry.pw_gid)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        # SCRAM for the app role over TCP (the wrong-password test needs a real check);
        # trust for everyone else (the superuser running the fixture).
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            f"host all {APP_USER} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n"
            "host all all ::1/128 trust\n"
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            # Throwaway data: durability off makes start, stop and inserts fast.
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.sockets}'\n"
                "max_connections = 300\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
                "password_encryption = 'scram-sha-256'\n"
                # A query whose client went away stops soon (as a production server
                # should be set up): a terminated pool leaves no session running on.
                "client_connection_check_interval = '100ms'\n"
            )
        self._initialized = True

    def enable_ssl(self, cert: Path, key: Path) -> None:
        """Serves TLS with ``cert``/``key`` (copied in; the key readable by the server only).
        Call after `init`, before `start`. Clients may still connect without TLS."""
        for source, name in ((cert, "server.crt"), (key, "server.key")):
            target = self.data / name
            shutil.copyfile(source, target)
            target.chmod(0o600)
            if self._as_postgres:
                entry = pwd.getpwnam(SUPERUSER)
                os.chown(target, entry.pw_uid, entry.pw_gid)
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")

    def start(self) -> None:
        """Starts the server (on the same port as before) and waits until it accepts."""
        if not self._initialized:
            self.init()
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m <mode>``: ``fast`` disconnects clients, aborting their work."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def _server_pids(self) -> list[int]:
        """The postmaster (first line of ``postmaster.pid``) and its children."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        pids = [postmaster]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[1]) == postmaster:  # the parent pid
                pids.append(int(stat.parent.name))
        return pids

    def pause(self) -> None:
        """SIGSTOPs the postmaster and its children: connections stay up, nothing answers
        (a hung server, as a partition would look). `resume` undoes it."""
        self._paused = True
        for pid in self._server_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONTs what `pause` stopped (and any child forked since: none can be)."""
        self._paused = False
        for pid in self._server_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def is_running(self) -> bool:
        result = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "status", check=False)
        return result.returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Runs ``sql`` as the superuser over the unix socket; returns the unaligned output."""
        result = self._run(
            str(self.bin / "psql"),
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(self.sockets),
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            database,
            "-c",
            sql,
        )
        return result.stdout.strip()

    def setup(self) -> None:
        """The ``app`` role (SCRAM password) and the ``test`` database it owns."""
        self.psql(f"CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'")
        self.psql(f"CREATE DATABASE {DATABASE} OWNER {APP_USER}")

    def cleanup(self) -> None:
        """Stops the server if it runs (immediately: nothing here is worth a checkpoint)."""
        if self._paused:
            self.resume()  # a stopped postmaster would not hear the stop
        if self._initialized and self.is_running():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # ----------------------------------------------------------------------- DSNs

    def dsn(self, database: str = DATABASE) -> str:
        """The superuser's DSN over TCP (trusted: no password)."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def app_dsn(self, password: str = APP_PASSWORD, database: str = DATABASE) -> str:
        """The ``app`` role's DSN over TCP, password percent-encoded."""
        from urllib.parse import quote

        return (
            f"postgresql://{APP_USER}:{quote(password, safe='')}@{self.host}:{self.port}/{database}"
        )

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
            self.setup()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(Exception):
            self.cleanup()


# ---------------------------------------------------------------------- test helpers


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Runs ``coro`` on a new event loop; a hang fails the test after ``timeout`` seconds
    (a guard against deadlocks, not a performance assertion)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def sessions(monitor: Any, application_name: str) -> int:
    """Server-side sessions with that ``application_name``, as ``pg_stat_activity`` shows."""
    count: int = await monitor.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", application_name
    )
    return count


async def settle(monitor: Any, application_name: str, expected: int, within: float = 20.0) -> int:
    """Waits until the server shows ``expected`` sessions (a backend that was told to go
    may linger for a moment); returns the last count, which the caller asserts on."""
    deadline = time.monotonic() + within
    count = await sessions(monitor, application_name)
    while count != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        count = await sessions(monitor, application_name)
    return count


async def wait_until(
    predicate: Callable[[], object], what: str, within: float = 30.0, every: float = 0.002
) -> None:
    """Polls ``predicate()`` (sync or async) until it is true; raises naming ``what`` if it
    is still false after ``within`` seconds (a hang guard, not a timing assertion)."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(every)
