"""The Redis store when things go wrong, against real redis-server processes: a stopped
server and a paused one (SIGSTOP: connections stay up, nothing answers) make every method
raise `StoreUnavailable` within the store's timeout, with the driver's error as its cause;
a one-node Redis Cluster runs every script (none is CROSSSLOT, where a multi-slot script
really fails); credentials never show in labels, reprs or errors."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
import redis.asyncio
import redis.exceptions
from postgres import run, wait_until
from redis_server import RedisServer
from store_contract import one_event_loop_per_store

import admission as adm
from admission.stores.redis import Redis, _usable

SECOND = 1_000_000
#: The bound a failing call must stay under: its timeout plus room for a busy machine (a
#: call that was not bounded would hang until the test's own guard fires).
SLACK = 2.0

Call = Callable[[Redis], Coroutine[Any, Any, object]]
METHODS: dict[str, Call] = {
    "register": lambda s: s.register("TokenBucket", "b", {"rate": 1.0}),
    "rate": lambda s: s.rate("b", None, SECOND, 10, 1, 0),
    "rate keyed": lambda s: s.rate("b", b"user:{42}", SECOND, 10, 1, 0),
    "rate_give_back": lambda s: s.rate_give_back("b", None, SECOND, 1, 1),
    "semaphore_acquire": lambda s: s.semaphore_acquire("s", 2, "h", SECOND, True),
    "semaphore_renew": lambda s: s.semaphore_renew("s", ["h", "x"], SECOND),
    "semaphore_release": lambda s: s.semaphore_release("s", "h"),
    "semaphore_state": lambda s: s.semaphore_state("s"),
}


async def _all_fail_within(store: Redis, cause: type[BaseException] | None) -> None:
    for method, call in METHODS.items():
        start = time.monotonic()
        with pytest.raises(adm.StoreUnavailable) as info:
            await call(store)
        elapsed = time.monotonic() - start
        assert elapsed < store.timeout + SLACK, (method, elapsed)
        assert info.value.store == store.label
        assert info.value.__cause__ is not None, method
        if cause is not None:
            assert isinstance(info.value.__cause__, cause), (method, info.value.__cause__)


async def _all_answer(store: Redis) -> None:
    for call in METHODS.values():
        await call(store)


async def _all_answer_again(store: Redis) -> None:
    """Every method answers again, each within a hang guard: the first calls after a
    restart reconnect and reload their scripts (NOSCRIPT), which may not fit in the store's
    short timeout on a busy machine; a store that never recovers fails the guard."""

    async def answers(call: Call) -> bool:
        try:
            await call(store)
        except adm.StoreUnavailable:
            return False
        return True

    for method, call in METHODS.items():
        await wait_until(lambda call=call: answers(call), f"{method} to answer again", 10.0)


def test_a_stopped_server_fails_every_method_at_once_then_comes_back() -> None:
    async def scenario(server: RedisServer) -> None:
        store = adm.stores.Redis(server.url(), timeout=0.2)
        try:
            await _all_answer(store)
            await asyncio.to_thread(server.stop)
            await _all_fail_within(store, redis.exceptions.ConnectionError)
            await asyncio.to_thread(server.start)
            await _all_answer_again(store)  # reconnects by itself; scripts reloaded on NOSCRIPT
        finally:
            await store.aclose()

    with RedisServer() as server:
        run(scenario(server))


def test_a_server_that_never_ran_is_unavailable() -> None:
    async def scenario() -> None:
        server = RedisServer()  # a free port, nothing started on it
        store = adm.stores.Redis(server.url(), timeout=0.2)
        try:
            await _all_fail_within(store, redis.exceptions.ConnectionError)
        finally:
            await store.aclose()
            server.cleanup()

    run(scenario())


@pytest.mark.parametrize("given", [False, True], ids=["own client", "given client"])
def test_a_paused_server_fails_every_method_within_the_timeout(given: bool) -> None:
    """SIGSTOP: TCP connections stay up and new ones are accepted by the kernel, but nothing
    answers. A given client with no socket timeout and redis-py's default retries is still
    bounded: the store's timeout covers the whole call."""

    async def scenario(server: RedisServer) -> None:
        client = redis.asyncio.Redis(port=server.port) if given else None
        store = adm.stores.Redis(server.url(), client=client, timeout=0.2)
        try:
            await _all_answer(store)
            server.pause()
            try:
                await _all_fail_within(store, None)
            finally:
                server.resume()
            await _all_answer_again(store)
        finally:
            await store.aclose()
            if client is not None:
                await client.aclose()

    with RedisServer() as server:
        run(scenario(server))


def test_pool_exhaustion_waits_for_a_connection_within_the_timeout(
    redis_server: RedisServer,
) -> None:
    """More concurrent calls than connections: they queue for one (none fails), and the
    store never opens more than its limit."""

    def connected() -> int:
        info = redis_server.command("INFO", "clients")
        text = info.decode() if isinstance(info, bytes) else str(info)
        return int(text.split("connected_clients:")[1].split()[0]) - 1  # not INFO's own

    async def scenario() -> None:
        before = connected()
        store = adm.stores.Redis(redis_server.url() + "?max_connections=4", timeout=5.0)
        try:
            replies = await asyncio.gather(
                *(store.rate("pool", b"k", SECOND, 1000, 1, 0) for _ in range(64))
            )
            assert all(r.admitted for r in replies)
            assert connected() - before == 4
        finally:
            await store.aclose()
        await wait_until(lambda: connected() == before, "the store's connections closed")

    run(scenario())


def test_connections_the_server_closed_while_idle_are_replaced_without_an_error(
    redis_server: RedisServer,
) -> None:
    """CLIENT KILL (as a server's idle timeout or a restart does) ends the store's idle
    connections: the next calls open new ones instead of failing on the dead ones."""

    async def scenario() -> None:
        store = adm.stores.Redis(redis_server.url(), timeout=5.0)
        try:
            await asyncio.gather(*(store.rate("idle", b"k", SECOND, 1000, 1, 0) for _ in range(3)))
            assert store._direct is not None
            idle = store._direct.idle
            assert len(idle) == 3
            redis_server.command("CLIENT", "KILL", "TYPE", "normal")
            await wait_until(lambda: not any(map(_usable, idle)), "the EOF seen by the store")
            replies = await asyncio.gather(
                *(store.rate("idle", b"k", SECOND, 1000, 1, 0) for _ in range(3))
            )
            assert all(r.admitted for r in replies)
            assert not set(store._direct.idle) & set(idle)  # all replaced
            assert store._direct.open == 3
        finally:
            await store.aclose()

    run(scenario())


async def _serve_until_a_script(reader: asyncio.StreamReader, writer: Any, answer: bytes) -> None:
    """A server that goes through redis-py's handshake (HELLO: RESP3; OK to the rest) and
    answers the first script with ``answer``, then closes the connection."""
    try:
        while command := await _read_command(reader):
            if command[0].upper() in (b"EVALSHA", b"EVAL"):
                writer.write(answer)
                return
            writer.write(_handshake_reply(command))
    finally:
        writer.close()


async def _read_command(reader: asyncio.StreamReader) -> list[bytes]:
    """The next command a client sent (its arguments), or [] at the end of the stream."""
    line = await reader.readline()
    if not line:
        return []
    args = []
    for _ in range(int(line[1:])):
        size = int((await reader.readline())[1:])
        args.append((await reader.readexactly(size + 2))[:-2])
    return args


def _handshake_reply(command: list[bytes]) -> bytes:
    """What redis-py's handshake gets: HELLO's map (RESP3), OK to the rest."""
    return b"%1\r\n$5\r\nproto\r\n:3\r\n" if command[0].upper() == b"HELLO" else b"+OK\r\n"


@pytest.mark.parametrize(
    "answer",
    [b"", b"+1 0 17", b"*4\r\n:1\r\n", b"$10\r\nabc", b"?what\r\n", b"HTTP/1.1 400\r\n"],
    ids=["nothing", "half a line", "half an array", "half a bulk string", "not RESP", "HTTP"],
)
def test_a_reply_cut_short_or_not_resp_fails_the_call_and_its_connection(answer: bytes) -> None:
    """The store reads its connections' replies itself: a connection that ends mid-reply,
    or answers what is not RESP, fails the call as any broken connection does
    (`StoreUnavailable` caused by redis-py's ConnectionError), and is closed, not reused."""

    async def scenario() -> None:
        server = await asyncio.start_server(
            lambda r, w: _serve_until_a_script(r, w, answer), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        store = adm.stores.Redis(f"redis://127.0.0.1:{port}/0", timeout=5.0)
        try:
            with pytest.raises(adm.StoreUnavailable) as info:
                await store.rate("cut", None, SECOND, 10, 1, 0)
            assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
            assert store._direct is not None
            assert store._direct.open == 0
            assert store._direct.idle == []
        finally:
            await store.aclose()
            server.close()
            await server.wait_closed()

    run(scenario())


def test_a_connection_given_back_just_before_its_loop_ends_is_closed(
    redis_server: RedisServer,
) -> None:
    """A call that ends as ``asyncio.run`` begins to shut down (a release in the background
    after the store closed, say) gives back a connection the store no longer keeps: it is
    closed then, not in a task the shutdown cancelled before it ran (its socket stayed open
    until collected: a ResourceWarning in a later test)."""
    store = adm.stores.Redis(redis_server.url())
    transports: list[asyncio.Transport] = []

    async def main() -> None:
        await store.rate("loop-end", None, SECOND, 10, 1, 0)  # a connection opened, idle
        assert store._direct is not None
        conn = await store._direct.take()
        transports.append(conn._writer.transport)
        await store.aclose()
        # Given back in the loop's last turn: by a callback after the main coroutine's end,
        # as a call in the background ends then.
        asyncio.get_running_loop().call_soon(store._direct.give, conn, True)

    asyncio.run(main())
    (transport,) = transports
    assert transport.is_closing()
    assert transport.get_extra_info("socket").fileno() == -1


class _ScriptedServer:
    """A server that goes through redis-py's handshake and answers each script, on whichever
    connection it comes, with the next of ``answers``: (seconds to wait first, the reply,
    whether to reset the connection (RST) right after it)."""

    def __init__(self, answers: list[tuple[float, bytes, bool]]) -> None:
        self.answers = answers
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: Any) -> None:
        self.connections += 1
        try:
            while command := await _read_command(reader):
                if command[0].upper() not in (b"EVALSHA", b"EVAL"):
                    writer.write(_handshake_reply(command))
                    continue
                delay, reply, reset = self.answers.pop(0)
                await asyncio.sleep(delay)
                writer.write(reply)
                await writer.drain()
                if reset:
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def _scripted_store(
    answers: list[tuple[float, bytes, bool]], timeout: float
) -> AsyncIterator[tuple[Redis, _ScriptedServer]]:
    """A store on a `_ScriptedServer` of ``answers``, both closed after."""
    scripted = _ScriptedServer(answers)
    server = await asyncio.start_server(scripted.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = adm.stores.Redis(f"redis://127.0.0.1:{port}/0", timeout=timeout)
    try:
        yield store, scripted
    finally:
        await store.aclose()
        server.close()
        await server.wait_closed()


def test_a_call_that_gave_up_mid_read_never_lends_its_reply_to_the_next() -> None:
    """A call ended by the timeout while its reply is still on the way: its connection is
    not used again (the reply would be read by the next call, out of step). The next call,
    made at once, gets its own reply."""

    async def scenario() -> None:
        late, own = b"+1 0 111 1000\r\n", b"+1 0 222 2000\r\n"
        answers = [(0.3, late, False), (0.0, own, False)]
        async with _scripted_store(answers, 0.2) as (store, scripted):
            with pytest.raises(adm.StoreUnavailable):
                await store.rate("late", None, SECOND, 10, 1, 0)
            reply = await store.rate("late", None, SECOND, 10, 1, 0)
            assert reply.tat_us == 222
            assert scripted.connections == 2

    run(scenario())


def test_a_connection_the_server_reset_while_idle_is_replaced_without_an_error() -> None:
    """The server resets an idle connection (RST: its reader holds the error, not an EOF):
    the next call opens a new connection instead of failing on the dead one."""

    async def scenario() -> None:
        first, second = b"+1 0 111 1000\r\n", b"+1 0 222 2000\r\n"
        answers = [(0.0, first, True), (0.0, second, False)]
        async with _scripted_store(answers, 5.0) as (store, scripted):
            assert (await store.rate("rst", None, SECOND, 10, 1, 0)).tat_us == 111
            assert store._direct is not None
            idle = store._direct.idle
            await wait_until(lambda: not any(map(_usable, idle)), "the reset seen by the store")
            assert (await store.rate("rst", None, SECOND, 10, 1, 0)).tat_us == 222
            assert scripted.connections == 2

    run(scenario())


# ------------------------------------------------------------------------ cluster


@pytest.fixture(scope="module")
def cluster() -> Any:
    with RedisServer(cluster=True) as server:
        yield server


def test_a_multi_slot_script_really_fails_on_the_cluster(cluster: RedisServer) -> None:
    """The control: the one-node cluster does check slots."""
    with pytest.raises(RuntimeError, match="CROSSSLOT"):
        cluster.command("EVAL", "return 1", 2, "{a}x", "{b}x")


NAMES = ["plain", "with:colons", "br{ace", "br}ace", "{tag}", "}{", "ünïcode"]
KEYS: list[bytes | None] = [None, b"", b"user:42", b"{user}", b"}", b"\xff\x00{x}"]


@pytest.mark.parametrize("kind", ["redis.asyncio.Redis", "redis.asyncio.RedisCluster"])
def test_every_script_runs_on_a_cluster(cluster: RedisServer, kind: str) -> None:
    async def scenario() -> None:
        client: Any
        if kind == "redis.asyncio.Redis":
            client = redis.asyncio.Redis(port=cluster.port)
        else:
            client = redis.asyncio.RedisCluster(host=cluster.host, port=cluster.port)
        store = adm.stores.Redis(client=client, timeout=5.0)
        try:
            cluster.command("SCRIPT", "FLUSH")  # the NOSCRIPT path too
            for name in NAMES:
                await store.register("TokenBucket", name, {"rate": 1.0})
                for key in KEYS:
                    reply = await store.rate(name, key, SECOND, 5, 1, 0)
                    assert reply.admitted
                    assert await store.rate_give_back(name, key, SECOND, 1, reply.tat_us)
                # Keys of many slots: one script on a server, one per key on a cluster (a
                # node refuses a script over several slots, CROSSSLOT, before running it).
                batch = [(key, 1, 0) for key in KEYS] + [(KEYS[1], 2, 0)]
                replies = await store.rate_batch(name, SECOND, 100, batch)
                assert [r.admitted for r in replies] == [True] * len(batch), (name, replies)
                assert replies[-1].tat_us == replies[1].tat_us + 2 * SECOND
                assert store._one_slot
                assert not store.rate_batch_is_one_round_trip  # the limiters: per key
                granted = await store.semaphore_acquire(name, 1, "a", SECOND, True)
                assert granted.granted
                assert (await store.semaphore_acquire(name, 1, "b", SECOND, True)).ahead == 0
                assert await store.semaphore_renew(name, ["a", "b"], SECOND) == [True, False]
                assert await store.semaphore_state(name) == (1, 1)
                assert await store.semaphore_release(name, "a")
                assert await store.semaphore_release(name, "b")
        finally:
            await store.aclose()
            await client.aclose()

    run(scenario())


@pytest.mark.parametrize("kind", ["redis.asyncio.Redis", "redis.asyncio.RedisCluster"])
def test_on_a_cluster_one_keys_failure_fails_only_its_own_callers(
    cluster: RedisServer, kind: str
) -> None:
    """A keyed limiter on a cluster: its keys' decisions go each in round trips of their
    own, so one key's failing (a key of another type: WRONGTYPE, a stand-in for its node
    failing over) fails only that key's callers; the others' are decided and charged. A
    plain client learns it talks to a cluster from a first CROSSSLOT."""

    async def scenario() -> list[str]:
        client: Any
        if kind == "redis.asyncio.Redis":
            client = redis.asyncio.Redis(port=cluster.port)
        else:
            client = redis.asyncio.RedisCluster(host=cluster.host, port=cluster.port)
        store = adm.stores.Redis(client=client, timeout=5.0)
        try:
            if kind == "redis.asyncio.Redis":
                await store.rate_batch("learn", SECOND, 10, [(b"p", 1, 0), (b"q", 1, 0)])
            assert store._one_slot
            per_user = adm.KeyedTokenBucket(
                rate=1, per=3600, burst=10, name=name, store=store, on_store_error="closed"
            )
            await per_user.acquire("warm", timeout=0)
            cluster.command("HSET", store._bucket_key(name, b"bad"), "f", "v")

            async def outcome(key: str) -> str:
                try:
                    await per_user.acquire(key, timeout=0)
                except adm.StoreUnavailable:
                    return "unavailable"
                return "admitted"

            first = asyncio.ensure_future(outcome("x"))
            await asyncio.sleep(0)  # x's round trip in flight: the others asked meanwhile
            rest = [asyncio.ensure_future(outcome(key)) for key in ("a", "bad", "z")]
            return [await first] + [await call for call in rest]
        finally:
            await store.aclose()
            await client.aclose()

    name = f"one-fails-{kind}"
    assert run(scenario()) == ["admitted", "admitted", "unavailable", "admitted"]
    store = adm.stores.Redis(cluster.url())
    for key in (b"a", b"z"):
        assert cluster.command("EXISTS", store._bucket_key(name, key)) == 1, key
    run(store.aclose())


def test_a_keyed_limiters_keys_spread_over_the_slots(cluster: RedisServer) -> None:
    store = adm.stores.Redis(cluster.url())
    slots = {
        cluster.command("CLUSTER", "KEYSLOT", store._bucket_key("users", b"user:%d" % i))
        for i in range(200)
    }
    assert len(slots) > 150  # the user key is inside the hash tag
    semaphore = {
        cluster.command("CLUSTER", "KEYSLOT", key) for key in store._semaphore_keys("db}{", "hfqen")
    }
    assert len(semaphore) == 1
    run(store.aclose())


# -------------------------------------------------------------------- credentials

SECRET = "s3cr3t-Pw"


@pytest.fixture(scope="module")
def with_user(redis_server: RedisServer) -> RedisServer:
    redis_server.command("ACL", "SETUSER", "app", "on", f">{SECRET}", "~*", "&*", "+@all")
    return redis_server


def test_credentials_never_show(with_user: RedisServer) -> None:
    port = with_user.port

    async def scenario() -> None:
        good = adm.stores.Redis(f"redis://app:{SECRET}@127.0.0.1:{port}/0", timeout=2.0)
        try:
            assert (await good.rate("creds", None, SECOND, 1, 1, 0)).admitted
            assert SECRET not in good.label
            assert SECRET not in repr(good)
            assert good.label == f"redis://app:***@127.0.0.1:{port}/0"
        finally:
            await good.aclose()
        wrong = "wr0ng-" + SECRET
        bad = adm.stores.Redis(f"redis://app:{wrong}@127.0.0.1:{port}/0", timeout=2.0)
        try:
            with pytest.raises(adm.StoreUnavailable) as info:
                await bad.rate("creds", None, SECOND, 1, 1, 0)
            assert isinstance(info.value.__cause__, redis.exceptions.AuthenticationError)
            for text in (str(info.value), repr(info.value), info.value.store, bad.label):
                assert wrong not in text
                assert SECRET not in text
        finally:
            await bad.aclose()
        # A password in the query, and one that is percent-encoded.
        encoded = SECRET.replace("-", "%2D")
        for url in (
            f"redis://127.0.0.1:{port}/0?username=app&password={SECRET}",
            f"redis://app:{encoded}@127.0.0.1:{port}/0",
        ):
            store = adm.stores.Redis(url, timeout=2.0)
            try:
                assert (await store.rate("creds2", None, SECOND, 5, 1, 0)).admitted
                assert SECRET not in store.label
                assert encoded not in store.label
                assert "***" in store.label
            finally:
                await store.aclose()

    run(scenario())


def test_a_bad_url_is_a_clear_error_without_its_password() -> None:
    with pytest.raises(ValueError, match=r"url 'http://app:\*\*\*@host/0' cannot be used") as info:
        adm.stores.Redis(f"http://app:{SECRET}@host/0")
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or SECRET not in str(info.value.__context__)


def test_the_label_of_a_given_client(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        client = redis.asyncio.Redis(port=redis_server.port, db=3, password="hidden-pw")
        store = adm.stores.Redis(client=client)
        assert store.label == f"redis://localhost:{redis_server.port}/3"
        assert "hidden-pw" not in repr(store)
        await store.aclose()
        await client.aclose()

    run(scenario())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, "timeout must be a number of seconds > 0"),
        ({"timeout": True}, "timeout must be a number of seconds > 0"),
        ({"prefix": ""}, "prefix must be a non-empty str"),
        ({"prefix": "app{}"}, "prefix must not contain braces"),  # would break the hash tags
        ({"prefix": "{app}"}, "prefix must not contain braces"),
    ],
)
def test_bad_options_are_clear_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        adm.stores.Redis(**kwargs)


@pytest.mark.parametrize("given", [False, True], ids=["own client", "given client"])
def test_a_decision_answered_after_the_timeout_is_given_back(given: bool) -> None:
    """The server paused past the store's timeout: the limiter's call fails at its deadline
    (StoreUnavailable, and nothing cancels the caller's task then or later), the script runs
    when the server resumes, and its charge is given back. (A timer around the call, the
    store's or redis-py's, would cancel the caller's task, which began it, and cut the
    connection: the server still runs the script it had received, and that charge stays.)"""

    async def scenario(server: RedisServer) -> None:
        client = redis.asyncio.Redis(port=server.port) if given else None
        store = adm.stores.Redis(server.url(), client=client, timeout=0.3)
        bucket = adm.TokenBucket(rate=1, per=3600, burst=5, name="late", store=store)
        me = asyncio.current_task()
        assert me is not None

        def scripts_run() -> int:
            stats = server.command("INFO", "commandstats")
            assert isinstance(stats, bytes)
            return sum(
                int(line.split(b"calls=")[1].split(b",")[0])
                for line in stats.splitlines()
                if line.startswith((b"cmdstat_evalsha:", b"cmdstat_eval:"))
            )

        try:
            await bucket.acquire(timeout=0)  # connected, registered, one token taken
            tat_before = server.command("GET", "admission:{b:late}")
            run_before = scripts_run()
            server.pause()
            try:
                with pytest.raises(adm.StoreUnavailable, match=r"no answer within 0\.3 s"):
                    await bucket.acquire(timeout=0)
                await asyncio.sleep(0.5)  # past any timer the call may have started
            finally:
                server.resume()
            assert me.cancelling() == 0
            # The late charge ran, then its give-back (at least two scripts: the give-back's
            # first EVALSHA meets NOSCRIPT, then its EVAL), and the TAT is as it was.
            await wait_until(
                lambda: (
                    scripts_run() >= run_before + 2
                    and server.command("GET", "admission:{b:late}") == tat_before
                ),
                "the late charge to be given back",
                10.0,
            )
            await asyncio.sleep(0.5)
            assert me.cancelling() == 0
        finally:
            await store.aclose()
            if client is not None:
                await client.aclose()

    with RedisServer() as server:
        run(scenario(server))


def test_a_release_answered_after_the_timeout_fails_without_cancelling_its_caller() -> None:
    """The server paused while a semaphore's lease is given back: `release_and_wait` fails
    at the store's timeout with `StoreUnavailable`, `async with`'s exit returns (the lease
    then expires, or is released when the server resumes), and nothing cancels the caller's
    task. (The release had no deadline of the limiter's: the store's own timer cancelled
    the caller's task, which got a `CancelledError` out of `async with`, its cancellation
    count left raised: 37 of 1,000 callers of a semaphore of 20 on a loaded server.)"""

    async def scenario(server: RedisServer) -> None:
        store = adm.stores.Redis(server.url(), timeout=0.3)
        name = f"late-release-{time.time_ns()}"
        semaphore = adm.Semaphore(2, name=name, store=store)
        me = asyncio.current_task()
        assert me is not None

        async def released() -> bool:
            return await store.semaphore_state(name) == (0, 0)

        try:
            lease = await semaphore.acquire(timeout=0)
            server.pause()
            try:
                with pytest.raises(adm.StoreUnavailable, match=r"no answer within 0\.3 s"):
                    await semaphore.release_and_wait(lease)
                await asyncio.sleep(0.5)  # past any timer the call may have started
            finally:
                server.resume()
            assert me.cancelling() == 0
            async with semaphore:
                server.pause()
            try:
                await asyncio.sleep(0.5)
            finally:
                server.resume()
            assert me.cancelling() == 0
            # Both released in the background once the server answers again.
            await wait_until(released, "the leases to be released", 10.0)
        finally:
            await store.aclose()

    with RedisServer() as server:
        run(scenario(server))


async def _proxy_losing_a_reply(port: int, command: bytes) -> tuple[asyncio.Server, list[int]]:
    """A proxy to the server on ``port`` that, the first time a client's bytes hold
    ``command``, lets the server run it and resets the client's connection instead of
    passing on the reply (what a connection lost mid-reply looks like: the server applied
    the command, the client cannot know). The list counts the replies lost."""
    lost: list[int] = []
    armed = [True]

    async def serve(client_reader: asyncio.StreamReader, client: Any) -> None:
        server_reader, server = await asyncio.open_connection("127.0.0.1", port)
        cut = asyncio.Event()

        async def up() -> None:
            with contextlib.suppress(OSError):
                while data := await client_reader.read(65536):
                    if armed[0] and command in data:
                        armed[0] = False
                        cut.set()
                    server.write(data)
            server.close()

        async def down() -> None:
            with contextlib.suppress(OSError):
                while data := await server_reader.read(65536):
                    if cut.is_set():
                        lost.append(1)
                        client.transport.abort()
                        return
                    client.write(data)
            client.close()

        await asyncio.gather(up(), down())

    return await asyncio.start_server(serve, "127.0.0.1", 0), lost


def test_a_lease_granted_whose_reply_was_lost_is_released(redis_server: RedisServer) -> None:
    """The server granted the lease but the connection was lost before its reply: the
    caller gets `StoreUnavailable`, and the lease it may hold is released at once, not
    left to take a permit from everyone until it expires (60 s here)."""
    from admission.stores.redis import ACQUIRE

    async def scenario() -> None:
        proxy, lost = await _proxy_losing_a_reply(redis_server.port, ACQUIRE.sha.encode())
        port = proxy.sockets[0].getsockname()[1]
        store = adm.stores.Redis(f"redis://127.0.0.1:{port}/0", timeout=5.0)
        direct = adm.stores.Redis(redis_server.url(), timeout=5.0)
        name = f"lost-{time.time_ns()}"
        semaphore = adm.Semaphore(2, name=name, store=store, lease="60s")
        try:
            await direct.semaphore_acquire("warm", 1, "h", SECOND, False)  # the script loaded
            with pytest.raises(adm.StoreUnavailable, match="Connection lost"):
                await semaphore.acquire(timeout=0)
            assert lost == [1]

            async def released() -> bool:
                return await direct.semaphore_state(name) == (0, 0)

            await wait_until(released, "the lease to be released", 10.0)
            async with semaphore as lease:  # the store answers again: a permit, a fence
                assert lease.fence > 0
        finally:
            await store.aclose()
            await direct.aclose()
            proxy.close()
            await proxy.wait_closed()

    run(scenario())


def test_a_server_slower_to_connect_to_than_the_timeout_is_still_used(
    redis_server: RedisServer,
) -> None:
    """Opening a connection takes 0.3 s (a TLS handshake far away, say), the timeout is
    0.1 s: the first calls fail within it, the connecting goes on, and the limiter then
    works. (Each call cut its own connecting short at its timeout, the limiter's first
    one, `register`, included: the store never reached the server.)"""

    async def scenario() -> None:
        async def slow(client_reader: asyncio.StreamReader, client: Any) -> None:
            await asyncio.sleep(0.3)
            server_reader, server = await asyncio.open_connection("127.0.0.1", redis_server.port)

            async def pipe(reader: asyncio.StreamReader, writer: Any) -> None:
                with contextlib.suppress(OSError):
                    while data := await reader.read(65536):
                        writer.write(data)
                writer.close()

            await asyncio.gather(pipe(client_reader, server), pipe(server_reader, client))

        proxy = await asyncio.start_server(slow, "127.0.0.1", 0)
        port = proxy.sockets[0].getsockname()[1]
        store = adm.stores.Redis(f"redis://127.0.0.1:{port}/0", timeout=0.1)
        bucket = adm.TokenBucket(rate=1000, name=f"slow-{time.time_ns()}", store=store)

        async def admitted() -> bool:
            try:
                await bucket.acquire(timeout=0)
            except adm.StoreUnavailable:
                await asyncio.sleep(0.2)
                return False
            return True

        try:
            await wait_until(admitted, "a call to get through", 10.0)
            for _ in range(20):  # and from then on, on the connection opened
                await bucket.acquire(timeout=0)
        finally:
            await store.aclose()
            proxy.close()
            await proxy.wait_closed()

    run(scenario())


def test_a_store_used_on_a_second_event_loop_says_so_at_once(redis_server: RedisServer) -> None:
    """A store (its connections) serves the event loop it was first used on: used from
    another (a second ``asyncio.run``, a test framework's loop per test), it says so at
    once. (Its call awaited a future of the first loop: the task threw, the guard held
    the error and handed the task the same wait again, forever, at 100 % CPU.)"""

    store = adm.stores.Redis(redis_server.url(), timeout=1.0)
    run(one_event_loop_per_store(store, f"loops-{time.time_ns()}"))
