"""One reply of the Redis protocol read from an asyncio stream: what the Redis store reads on
its own connections (`admission.stores.redis`) in place of redis-py's reply parser.

redis-py's pure-Python parser awaits a coroutine of its own per element of a reply, behind a
`read_response` that handles timeouts and errors per call: a raw script call read here costs
the client a third fewer instructions (benches/RESULTS.md, "store17h"). A reply is read line
by line straight from the connection's `asyncio.StreamReader`, which holds the whole of a
short reply once its first line has arrived.

Every RESP2 type, and the RESP3 types a script's reply can take on a connection that asked
for RESP3 (``?protocol=3`` in the URL): null, boolean, double, big number, verbatim string,
blob error, map, set; a push message (or an attribute) before a reply is skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["ProtocolError", "read_reply"]

ErrorReply = Callable[[str], Exception]
"""Makes the exception of an error reply from its text (``NOSCRIPT No matching ...``)."""


class ProtocolError(Exception):
    """A reply that is not RESP: the connection is out of step and must be closed."""


async def read_reply(reader: asyncio.StreamReader, error: ErrorReply) -> Any:
    """The next reply on ``reader``: an int, bytes (a bulk or simple string), None (a null),
    a list, or, in RESP3, a bool, float or dict. An error reply is raised as
    ``error(its text)``; an error inside an array is returned in its place (as redis-py
    does). `asyncio.IncompleteReadError` if the stream ends first; `ProtocolError` if what
    comes is not RESP."""
    try:
        # A line longer than the reader's limit (64 KiB) is a ProtocolError: the longest
        # the store reads is a rate_batch status line, under 46 kB for RATE_MANY_MAX (1,024).
        line = await reader.readuntil(b"\r\n")
        kind = line[0]
        # The replies of the store's scripts, read here with no coroutine of `_read`'s.
        if kind == 43:  # "+" simple string
            return line[1:-2]
        if kind == 58:  # ":" integer (int() ignores the trailing b"\r\n")
            return int(line[1:])
        reply = await _read(reader, error, line)
    except (ValueError, asyncio.LimitOverrunError) as exc:  # a length or number that is not
        raise ProtocolError(f"not a RESP reply: {exc}") from exc
    if isinstance(reply, _Failed):
        raise reply.exception
    return reply


class _Failed:
    """An error reply, kept apart from a reply that is an exception's text."""

    __slots__ = ("exception",)

    def __init__(self, exception: Exception) -> None:
        self.exception = exception


async def _read(reader: asyncio.StreamReader, error: ErrorReply, line: bytes = b"") -> Any:
    """The next reply (its first ``line`` if already read); an error reply as `_Failed`."""
    while True:
        if not line:
            # A line longer than the reader's limit (64 KiB) is a ProtocolError: the longest
            # the store reads is a rate_batch status line, under 46 kB for RATE_MANY_MAX (1,024).
            line = await reader.readuntil(b"\r\n")
        kind = line[0]
        # int() ignores the trailing b"\r\n": no slice for the most common replies.
        if kind == 58:  # ":" integer
            return int(line[1:])
        if kind == 42 or kind == 126:  # "*" array, "~" set
            count = int(line[1:])
            if count < 0:
                return None
            return [_element(await _read(reader, error)) for _ in range(count)]
        if kind == 36 or kind == 61:  # "$" bulk string, "=" verbatim string
            size = int(line[1:])
            if size < 0:
                return None
            data = await reader.readexactly(size + 2)
            if data[-2:] != b"\r\n":
                raise ValueError(f"a bulk string of {size} bytes not ended by CRLF")
            return data[4:-2] if kind == 61 else data[:-2]  # a verbatim string: "txt:..."
        if kind == 43:  # "+" simple string
            return line[1:-2]
        if kind == 45:  # "-" error
            return _Failed(error(line[1:-2].decode("utf-8", "replace")))
        if kind == 33:  # "!" blob error
            data = (await reader.readexactly(int(line[1:]) + 2))[:-2]
            return _Failed(error(data.decode("utf-8", "replace")))
        if kind == 95:  # "_" null
            return None
        if kind == 35:  # "#" boolean
            return line[1:2] == b"t"
        if kind == 44:  # "," double
            return float(line[1:])
        if kind == 40:  # "(" big number
            return int(line[1:])
        if kind == 37:  # "%" map
            pairs = [_element(await _read(reader, error)) for _ in range(2 * int(line[1:]))]
            return dict(zip(pairs[::2], pairs[1::2], strict=True))
        if kind == 62 or kind == 124:  # ">" push, "|" attribute: not a reply, skipped
            for _ in range(int(line[1:]) * (2 if kind == 124 else 1)):
                await _read(reader, error)
            line = b""
            continue
        raise ProtocolError(f"not a RESP reply: {line[:40]!r}")


def _element(reply: Any) -> Any:
    """An element of an aggregate: an error reply is the exception itself."""
    return reply.exception if isinstance(reply, _Failed) else reply
