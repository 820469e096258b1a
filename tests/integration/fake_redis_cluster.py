"""Fake Redis Cluster nodes on loopback, in the test's event loop: just enough of RESP and of
a node for redis-py's ``RedisCluster`` client and the Redis store's own connections to them.

Each `FakeNode` answers the handshake (``HELLO 3``, ``CLIENT ...``), ``COMMAND`` (the two
script commands), ``CLUSTER SLOTS`` (the `FakeCluster`'s map as it stands), the store's
``register`` script with nil (registered), and every other ``EVALSHA``/``EVAL`` with the
next of its ``replies`` (an error reply for an `Exception`, else a status line), or with
`FakeNode.default` once they are used up. It counts the connections open to it and the
script calls it answered: what the tests assert on. The store's scripts never run here: a
test says what they answer.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from admission.stores.redis import REGISTER

__all__ = ["FakeCluster", "FakeNode", "resp"]

SLOTS = 16384


def resp(value: Any) -> bytes:
    """``value`` in RESP3: None, int, bytes (bulk), str (status), list, dict, Exception."""
    if value is None:
        return b"_\r\n"
    if isinstance(value, bool):
        return b"#t\r\n" if value else b"#f\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, str):
        return b"+%s\r\n" % value.encode()
    if isinstance(value, Exception):
        return b"-%s\r\n" % str(value).encode()
    if isinstance(value, list):
        return b"*%d\r\n%s" % (len(value), b"".join(resp(item) for item in value))
    if isinstance(value, dict):
        items = b"".join(resp(k) + resp(v) for k, v in value.items())
        return b"%%%d\r\n%s" % (len(value), items)
    raise TypeError(f"no RESP for {value!r}")


async def _command(reader: asyncio.StreamReader) -> list[bytes]:
    line = await reader.readuntil(b"\r\n")
    if line[:1] != b"*":
        raise ValueError(f"not a command: {line!r}")
    args = []
    for _ in range(int(line[1:])):
        size = int((await reader.readuntil(b"\r\n"))[1:])
        args.append((await reader.readexactly(size + 2))[:-2])
    return args


class FakeNode:
    """One fake node (see the module docstring); `start` it in the test's loop."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.port = 0
        self.replies: collections.deque[Any] = collections.deque()
        """What the next script calls answer, in order (then `default`)."""
        self.default: Any = "1 0 5 6"  # a rate script's "admitted, wait 0, TAT 5, now 6"
        self.scripts = 0
        """Script calls answered."""
        self.connections: set[asyncio.StreamWriter] = set()
        """The connections open to this node now."""
        self._server: asyncio.Server | None = None

    @property
    def name(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Closes the listening socket and every connection (a node that died)."""
        if self._server is not None:
            self._server.close()
            for writer in list(self.connections):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    def _answer(self, args: list[bytes]) -> Any:
        command = args[0].upper()
        if command == b"HELLO":
            return {
                b"server": b"redis",
                b"version": b"7.2.0",
                b"proto": 3,
                b"id": 1,
                b"mode": b"cluster",
                b"role": b"master",
                b"modules": [],
            }
        if command == b"COMMAND":
            flags = [b"noscript", b"movablekeys"]
            info = [-3, flags, 0, 0, 0, [b"@scripting"], [], [], []]
            return [[name, *info] for name in (b"evalsha", b"eval")]
        if command == b"CLUSTER" and args[1].upper() == b"SLOTS":
            return self.cluster.slot_map()
        if command in (b"EVALSHA", b"EVAL"):
            if args[1] in (REGISTER.sha.encode(), REGISTER.source.encode()):
                return None
            self.scripts += 1
            return self.replies.popleft() if self.replies else self.default
        return "OK"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.add(writer)
        try:
            while True:
                writer.write(resp(self._answer(await _command(reader))))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.connections.discard(writer)
            writer.close()


class FakeCluster:
    """Fake nodes and the slot map they all report: ``owner[i]`` serves the i-th equal
    share of the slots (change it, and the next ``CLUSTER SLOTS`` says so)."""

    def __init__(self, nodes: int) -> None:
        self.nodes = [FakeNode(self) for _ in range(nodes)]
        self.owner = list(range(nodes))

    async def start(self) -> None:
        for node in self.nodes:
            await node.start()

    async def stop(self) -> None:
        for node in self.nodes:
            await node.stop()

    def slot_map(self) -> list[Any]:
        shares = len(self.owner)
        ranges = []
        for i, owner in enumerate(self.owner):
            node = self.nodes[owner]
            first, last = SLOTS * i // shares, SLOTS * (i + 1) // shares - 1
            ranges.append([first, last, [b"127.0.0.1", node.port, b"id%d" % owner]])
        return ranges
