"""A throwaway PgBouncer in front of a `PostgresServer`: real, on 127.0.0.1, a free port.

``PgBouncer`` runs Debian's ``pgbouncer`` (``make services`` installs it) in the foreground as
a child process, as the ``postgres`` user when run as root (PgBouncer refuses to run as root),
with its configuration and log in a fresh temporary directory. It pools in **transaction**
mode, the mode that strands session state (advisory locks, ``SET``, named prepared statements)
and so the one a store must survive; clients may open more connections than it opens to the
server (``server_connections``), so statements of different clients share server sessions.
It is waited for with a bounded connect loop and stopped by its pid.

    with PostgresServer() as server, PgBouncer(server, server_connections=2) as bouncer:
        pool = await asyncpg.create_pool(bouncer.dsn(), statement_cache_size=0)
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from postgres import DATABASE, SUPERUSER, PostgresServer, free_port

__all__ = ["PgBouncer"]

#: Seconds `start` waits for PgBouncer to accept connections (a hang guard).
START_WITHIN = 30.0


def pgbouncer_binary() -> str:
    """``pgbouncer`` on PATH (or Debian's /usr/sbin); raises saying how to install it."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if not found:
        raise RuntimeError(
            "pgbouncer is not installed: run `make services` (apt-get install pgbouncer)"
        )
    return found


class PgBouncer:
    """PgBouncer in transaction mode in front of ``server``; see the module docstring."""

    def __init__(self, server: PostgresServer, *, server_connections: int = 2) -> None:
        self.server = server
        self.server_connections = server_connections
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="admission-pgbouncer-"))
        self.log = self.root / "pgbouncer.log"
        self._process: subprocess.Popen[bytes] | None = None

    def dsn(self) -> str:
        """The superuser's DSN through PgBouncer (``auth_type = any``: no password)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    def _write_config(self) -> Path:
        config = self.root / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"{DATABASE} = host=127.0.0.1 port={self.server.port} dbname={DATABASE} "
            f"user={SUPERUSER}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            f"unix_socket_dir = {self.root}\n"
            "auth_type = any\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.server_connections}\n"
            "min_pool_size = 0\n"
            "reserve_pool_size = 0\n"
            "max_client_conn = 200\n"
            f"logfile = {self.log}\n"
            f"pidfile = {self.root / 'pgbouncer.pid'}\n"
        )
        return config

    def start(self) -> None:
        config = self._write_config()
        command = [pgbouncer_binary(), str(config)]
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SUPERUSER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            os.chown(config, entry.pw_uid, entry.pw_gid)
            command = ["runuser", "-u", SUPERUSER, "--", *command]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + START_WITHIN
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"pgbouncer exited ({self._process.returncode}):\n{self.log_text()}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"pgbouncer did not listen within {START_WITHIN} s:\n{self.log_text()}"
                )
            time.sleep(0.05)

    def log_text(self) -> str:
        try:
            return self.log.read_text()[-4000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        # Its own session (start_new_session): runuser and pgbouncer go together.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def __enter__(self) -> PgBouncer:
        try:
            self.start()
        except BaseException:
            self.stop()
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
