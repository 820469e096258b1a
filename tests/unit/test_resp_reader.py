"""`admission.stores._resp.read_reply`: the Redis store's own reply reader, fed bytes as a
server would send them (whole, or cut anywhere: a reply arrives in as many reads as TCP
makes of it). The store's integration tests run it against real servers."""

from __future__ import annotations

import asyncio

import pytest
import redis.exceptions
from redis._parsers import BaseParser

from admission.stores._resp import ProtocolError, read_reply


def read(data: bytes, *, cut: int | None = None, eof: bool = False) -> object:
    """The reply ``read_reply`` makes of ``data``, fed at once or in pieces of ``cut`` bytes
    (each after the reader has waited); ``eof``: the stream ends after ``data``."""

    async def main() -> object:
        reader = asyncio.StreamReader()
        pieces = [data] if cut is None else [data[i : i + cut] for i in range(0, len(data), cut)]

        async def feed() -> None:
            for piece in pieces:
                reader.feed_data(piece)
                await asyncio.sleep(0)
            if eof:
                reader.feed_eof()

        feeding = asyncio.ensure_future(feed())
        try:
            return await read_reply(reader, BaseParser.parse_error)
        finally:
            await feeding

    return asyncio.run(main())


RESP2 = [
    (b":42\r\n", 42),
    (b":-7\r\n", -7),
    (b":1796621884937718\r\n", 1796621884937718),
    (b"+OK\r\n", b"OK"),
    (b"+1 0 1796621884937718 1796621884937717\r\n", b"1 0 1796621884937718 1796621884937717"),
    (b"$5\r\nhe\r\no\r\n", b"he\r\no"),  # a bulk string's length, not its content, ends it
    (b"$0\r\n\r\n", b""),
    (b"$-1\r\n", None),
    (b"*-1\r\n", None),
    (b"*0\r\n", []),
    (b"*4\r\n:1\r\n:0\r\n:17\r\n:16\r\n", [1, 0, 17, 16]),
    (b"*2\r\n*2\r\n:1\r\n$1\r\na\r\n$-1\r\n", [[1, b"a"], None]),
]

RESP3 = [
    (b"_\r\n", None),
    (b"#t\r\n", True),
    (b"#f\r\n", False),
    (b",1.5\r\n", 1.5),
    (b"(123456789012345678901234567890\r\n", 123456789012345678901234567890),
    (b"=7\r\ntxt:abc\r\n", b"abc"),
    (b"%1\r\n$1\r\nk\r\n:1\r\n", {b"k": 1}),
    (b"~2\r\n:1\r\n:2\r\n", [1, 2]),
    # A push message before the reply is not the reply (RESP3 servers may send one any time).
    (b">2\r\n$7\r\nmessage\r\n$2\r\nhi\r\n:5\r\n", 5),
    (b"|1\r\n$3\r\nttl\r\n:3\r\n:9\r\n", 9),  # an attribute is skipped the same way
]


@pytest.mark.parametrize(("data", "reply"), RESP2 + RESP3)
def test_each_type_is_read_whole_or_cut_anywhere(data: bytes, reply: object) -> None:
    assert read(data) == reply
    assert read(data, cut=1) == reply
    assert read(data, cut=3) == reply


def test_an_error_reply_raises_what_redis_py_would_raise_for_it() -> None:
    with pytest.raises(redis.exceptions.NoScriptError, match="No matching script"):
        read(b"-NOSCRIPT No matching script. Please use EVAL.\r\n", cut=4)
    with pytest.raises(redis.exceptions.ClusterCrossSlotError):
        read(b"-CROSSSLOT Keys in request don't hash to the same slot\r\n")
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        read(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n")
    with pytest.raises(redis.exceptions.ResponseError, match=r"^boom$"):
        read(b"!4\r\nboom\r\n")  # RESP3 blob error


def test_an_error_inside_an_array_is_its_element_and_a_string_is_never_taken_for_one() -> None:
    reply = read(b"*3\r\n:1\r\n-ERR inner\r\n+-ERR not an error\r\n")
    assert isinstance(reply, list)
    assert reply[0] == 1
    assert isinstance(reply[1], redis.exceptions.ResponseError)
    assert str(reply[1]) == "inner"
    assert reply[2] == b"-ERR not an error"


@pytest.mark.parametrize("data", [b":12", b"*3\r\n:1\r\n", b"$10\r\nabc", b""])
def test_a_stream_that_ends_mid_reply_raises_incomplete_read(data: bytes) -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        read(data, eof=True)


@pytest.mark.parametrize("data", [b"?what\r\n", b":12a\r\n", b"$x\r\n", b"HTTP/1.1 400\r\n"])
def test_what_is_not_resp_raises_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        read(data)
