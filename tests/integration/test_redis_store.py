"""The Redis store's methods against a real redis-server (one per module, `redis_server`).

Each `NetworkStore` method's semantics (stores/network.py), checked exactly: the GCRA's
arithmetic on the server's clock (the reply's ``now_us`` and the stored TAT), refusals that
change nothing, TTL = time until full, the give-back's compare-and-set, FIFO semaphores with
expiring leases and queue entries, fencing tokens that never go back; ``register``'s
mismatch; and the scripts' reload on exactly ``NOSCRIPT``. Outages, cluster slots and
credentials are in test_redis_store_failures.py.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
import redis.asyncio
from postgres import run, wait_until
from redis_server import RedisServer
from store_contract import (
    a_dead_waiters_entry_expires_before_its_lease,
    absurd_waits_and_buckets_stay_exact,
    rates_answer_as_the_reference,
    semaphores_answer_as_the_reference,
)

import admission as adm
from admission.stores import RateReply
from admission.stores.network import MAX_SPAN_US, RATE_MANY_MAX
from admission.stores.redis import SCRIPTS, Redis

T = TypeVar("T")
SECOND = 1_000_000


@asynccontextmanager
async def opened(server: RedisServer, **kwargs: Any) -> AsyncIterator[Redis]:
    store = adm.stores.Redis(server.url(), **kwargs)
    try:
        yield store
    finally:
        await store.aclose()


def with_store(server: RedisServer, body: Callable[[Redis], Coroutine[Any, Any, T]]) -> T:
    async def scenario() -> T:
        async with opened(server, timeout=5.0) as store:
            return await body(store)

    return run(scenario())


def unique(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex[:12]}"


def server_now(server: RedisServer) -> int:
    seconds, micros = server.command("TIME")  # type: ignore[misc]
    return int(seconds) * SECOND + int(micros)


def stored_tat(server: RedisServer, key: bytes) -> int | None:
    value = server.command("GET", key)
    return None if value is None else int(value)  # type: ignore[call-overload]


# --------------------------------------------------------------------------- rate


def test_gcra_on_the_servers_clock_exactly(redis_server: RedisServer) -> None:
    name, T, burst = unique("gcra"), SECOND, 3  # 1/s, burst 3

    async def body(store: Redis) -> None:
        before = server_now(redis_server)
        replies = [await store.rate(name, None, T, burst, 1, 0) for _ in range(burst)]
        after = server_now(redis_server)
        tat = None
        for reply in replies:
            assert reply.admitted
            assert reply.wait_us == 0
            assert before <= reply.now_us <= after  # the server's clock, not the client's
            start = reply.now_us if tat is None else max(tat, reply.now_us)
            assert reply.tat_us == start + T
            tat = reply.tat_us
        # Spent: refused, with the exact wait, and the TAT left as it was.
        key = store._bucket_key(name, None)
        refused = await store.rate(name, None, T, burst, 2, 0)
        assert not refused.admitted
        assert refused.tat_us == tat == stored_tat(redis_server, key)
        assert refused.wait_us == tat + 2 * T - burst * T - refused.now_us > 0
        # Admitted later: with a bound that allows the wait, or with no bound (-1).
        waited = await store.rate(name, None, T, burst, 1, 5 * SECOND)
        assert waited.admitted
        assert waited.tat_us == tat + T
        assert waited.wait_us == waited.tat_us - burst * T - waited.now_us > 0
        unbounded = await store.rate(name, None, T, burst, burst, -1)
        assert unbounded.admitted
        assert unbounded.tat_us == waited.tat_us + burst * T
        assert stored_tat(redis_server, key) == unbounded.tat_us
        # A wait over the bound is refused (about 5 s against 2 s).
        over = await store.rate(name, None, T, burst, 1, 2 * SECOND)
        assert not over.admitted
        assert over.wait_us > 2 * SECOND
        assert stored_tat(redis_server, key) == unbounded.tat_us

    with_store(redis_server, body)


def test_refusals_change_nothing(redis_server: RedisServer) -> None:
    name = unique("refused")

    async def body(store: Redis) -> None:
        key = store._bucket_key(name, None)
        first = await store.rate(name, None, 60 * SECOND, 1, 1, 0)
        ttl = redis_server.command("PTTL", key)
        for _ in range(20):
            reply = await store.rate(name, None, 60 * SECOND, 1, 1, 0)
            assert not reply.admitted
            assert reply.tat_us == first.tat_us
        assert stored_tat(redis_server, key) == first.tat_us
        assert redis_server.command("PTTL", key) <= ttl  # type: ignore[operator]

    with_store(redis_server, body)


def test_the_state_expires_once_the_bucket_is_full(redis_server: RedisServer) -> None:
    name = unique("ttl")

    async def body(store: Redis) -> None:
        key = store._bucket_key(name, None)
        reply = await store.rate(name, None, 37_777, 5, 4, 0)  # not a whole ms on purpose
        ttl = redis_server.command("PTTL", key)
        assert isinstance(ttl, int)
        # TTL = time until full, rounded up: never gone while the bucket is still short.
        assert 0 < ttl <= math.ceil((reply.tat_us - reply.now_us) / 1000)
        await wait_until(lambda: redis_server.command("EXISTS", key) == 0, "the key to expire")
        again = await store.rate(name, None, 37_777, 5, 5, 0)
        assert again.admitted
        assert again.tat_us == again.now_us + 5 * 37_777

    with_store(redis_server, body)


def test_keys_and_names_never_collide(redis_server: RedisServer) -> None:
    async def body(store: Redis) -> None:
        T = 60 * SECOND
        name = unique("keyed")
        pairs: list[tuple[str, bytes | None]] = [
            (name, None),
            (name, b""),
            (name, b"a"),
            (name, b"A"),
            (name, b"}x{"),
            (name, b"\xff\x00:"),
            (name + ":a", b"b"),
            (name, b"a:b"),
            (name + ":a:b", None),
        ]
        keys = {store._bucket_key(n, k) for n, k in pairs}
        assert len(keys) == len(pairs)
        for n, k in pairs:  # each its own full bucket of 1
            assert (await store.rate(n, k, T, 1, 1, 0)).admitted, (n, k)
        for n, k in pairs:
            assert not (await store.rate(n, k, T, 1, 1, 0)).admitted, (n, k)

    with_store(redis_server, body)


def test_bad_arguments_are_refused_before_any_round_trip(redis_server: RedisServer) -> None:
    async def body(store: Redis) -> None:
        name = unique("bad")
        with pytest.raises(ValueError, match="cost must be between 1 and burst"):
            await store.rate(name, None, 1000, 3, 4, 0)
        with pytest.raises(ValueError, match="cost must be between 1 and burst"):
            await store.rate(name, None, 1000, 3, 0, 0)
        with pytest.raises(ValueError, match="interval_us must be an int >= 1"):
            await store.rate(name, None, 0, 3, 1, 0)
        with pytest.raises(ValueError, match="limit must be an int >= 1"):
            await store.semaphore_acquire(name, 0, "h", SECOND, True)
        with pytest.raises(ValueError, match="lease_us must be an int from 1 to"):
            await store.semaphore_acquire(name, 1, "h", 0, True)
        with pytest.raises(ValueError, match="holder must be a non-empty str"):
            await store.semaphore_acquire(name, 1, "", SECOND, True)
        assert redis_server.command("EXISTS", store._bucket_key(name, None)) == 0

    with_store(redis_server, body)


# ---------------------------------------------------------------- rate_give_back


def test_give_back_undoes_only_the_last_charge(redis_server: RedisServer) -> None:
    name, T = unique("give"), SECOND

    async def body(store: Redis) -> None:
        key = store._bucket_key(name, b"user")
        first = await store.rate(name, b"user", T, 10, 2, 0)
        second = await store.rate(name, b"user", T, 10, 3, 0)
        assert second.tat_us == first.tat_us + 3 * T
        # Not the last charge: refused, nothing changes.
        assert await store.rate_give_back(name, b"user", T, 2, first.tat_us) is False
        assert stored_tat(redis_server, key) == second.tat_us
        # The last one: undone exactly, once.
        assert await store.rate_give_back(name, b"user", T, 3, second.tat_us) is True
        assert stored_tat(redis_server, key) == first.tat_us
        assert await store.rate_give_back(name, b"user", T, 3, second.tat_us) is False
        assert stored_tat(redis_server, key) == first.tat_us
        # Now the first is the last: undoing it leaves a full bucket, which has no key.
        assert await store.rate_give_back(name, b"user", T, 2, first.tat_us) is True
        assert redis_server.command("EXISTS", key) == 0
        assert await store.rate_give_back(name, b"user", T, 2, first.tat_us) is False
        # Another key's state is not touched.
        other = await store.rate(name, b"other", T, 10, 1, 0)
        assert await store.rate_give_back(name, b"user", T, 1, other.tat_us) is False
        assert stored_tat(redis_server, store._bucket_key(name, b"other")) == other.tat_us

    with_store(redis_server, body)


def test_give_back_keeps_the_ttl_right(redis_server: RedisServer) -> None:
    name, T = unique("give-ttl"), 10 * SECOND

    async def body(store: Redis) -> None:
        key = store._bucket_key(name, None)
        await store.rate(name, None, T, 10, 1, 0)
        last = await store.rate(name, None, T, 10, 5, 0)
        assert await store.rate_give_back(name, None, T, 5, last.tat_us)
        ttl = redis_server.command("PTTL", key)
        assert isinstance(ttl, int)
        assert 0 < ttl <= math.ceil((last.tat_us - 5 * T - last.now_us) / 1000)

    with_store(redis_server, body)


# ---------------------------------------------------------------------- register


def test_register_is_idempotent_and_refuses_another_config(redis_server: RedisServer) -> None:
    name = unique("reg")

    async def body(store: Redis) -> None:
        await store.register("TokenBucket", name, {"rate": 10, "per": 60, "burst": 5})
        await store.register("TokenBucket", name, {"burst": 5.0, "per": 60.0, "rate": 10.0})
        # Another kind under the same name is another limiter.
        await store.register("Semaphore", name, {"limit": 3})
        with pytest.raises(ValueError, match="is configured as") as info:
            await store.register("TokenBucket", name, {"rate": 11, "per": 60, "burst": 5})
        message = str(info.value)
        assert f"TokenBucket {name!r}" in message
        assert '"rate":10.0' in message
        assert '"rate":11.0' in message
        with pytest.raises(ValueError, match=re.escape('"limit":3.0')):
            await store.register("Semaphore", name, {"limit": 4})
        with pytest.raises(ValueError, match="kind must be an identifier"):
            await store.register("Token:Bucket", name, {})

    with_store(redis_server, body)


def test_register_with_a_client_decoding_replies(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        client = redis.asyncio.Redis(port=redis_server.port, decode_responses=True)
        store = adm.stores.Redis(client=client, timeout=5.0)
        name = unique("decoded")
        await store.register("Semaphore", name, {"limit": 3})
        with pytest.raises(ValueError, match=re.escape('configured as {"limit":3.0}')):
            await store.register("Semaphore", name, {"limit": 4})
        assert (await store.rate(name, b"k", SECOND, 1, 1, 0)).admitted
        # The rate scripts' status replies come as str from such a client, and still parse.
        many = await store.rate_many(name, b"m", SECOND, 2, [(1, 0), (1, 0), (1, 0)])
        assert [r.admitted for r in many] == [True, True, False]
        batch = await store.rate_batch(name, SECOND, 2, [(b"a", 2, 0), (b"b", 1, 0)])
        assert [r.admitted for r in batch] == [True, True]
        assert batch[0].tat_us == batch[0].now_us + 2 * SECOND
        await store.aclose()
        assert await client.ping()  # a given client is left open
        await client.aclose()

    run(scenario())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("protocol", [2, 3])
def test_every_method_in_either_protocol(
    redis_server: RedisServer, protocol: int, loop: str
) -> None:
    """The store reads its own connections' replies, in the protocol they speak: RESP2 or
    RESP3 (``?protocol=``; redis-py's default is 3 since its version 8, 2 before): a null
    (register), status lines (the rate scripts), arrays (the semaphore's), a bulk string
    (another configuration), integers, and the NOSCRIPT error; on asyncio's loop and on
    uvloop's (its transports under the same streams)."""

    async def scenario() -> None:
        store = adm.stores.Redis(redis_server.url() + f"?protocol={protocol}", timeout=5.0)
        name = unique(f"resp{protocol}")
        try:
            redis_server.command("SCRIPT", "FLUSH")  # each script's first call: NOSCRIPT, EVAL
            await store.register("TokenBucket", name, {"rate": 1})
            await store.register("TokenBucket", name, {"rate": 1})
            with pytest.raises(ValueError, match=re.escape('configured as {"rate":1.0}')):
                await store.register("TokenBucket", name, {"rate": 2})
            first = await store.rate(name, None, SECOND, 2, 1, 0)
            assert first.admitted
            assert first.tat_us == first.now_us + SECOND
            many = await store.rate_many(name, None, SECOND, 2, [(1, 0), (1, 0)])
            assert [r.admitted for r in many] == [True, False]
            assert many[1].wait_us == SECOND + (many[1].tat_us - many[1].now_us - 2 * SECOND)
            batch = await store.rate_batch(name, SECOND, 2, [(b"a", 1, 0), (b"b", 2, 0)])
            assert [r.admitted for r in batch] == [True, True]
            assert await store.rate_give_back(name, b"b", SECOND, 2, batch[1].tat_us)
            granted = await store.semaphore_acquire(name, 1, "a", SECOND, True)
            assert granted.granted
            queued = await store.semaphore_acquire(name, 1, "b", SECOND, True)
            assert (queued.granted, queued.ahead) == (False, 0)
            assert await store.semaphore_renew(name, ["a", "x"], SECOND) == [True, False]
            assert await store.semaphore_state(name) == (1, 1)
            assert await store.semaphore_release(name, "a")
        finally:
            await store.aclose()

    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        uvloop.run(asyncio.wait_for(scenario(), 60.0))
    else:
        run(scenario())


# -------------------------------------------------------------------- semaphore


def test_leases_up_to_the_limit_fences_increase(redis_server: RedisServer) -> None:
    name = unique("sem")

    async def body(store: Redis) -> None:
        fences = []
        for i in range(3):
            reply = await store.semaphore_acquire(name, 3, f"h{i}", 60 * SECOND, False)
            assert reply.granted
            assert reply.in_use == i + 1
            assert reply.ahead == 0
            fences.append(reply.fence)
        assert fences == sorted(set(fences))
        refused = await store.semaphore_acquire(name, 3, "h3", 60 * SECOND, False)
        assert refused == adm.stores.SemaphoreReply(False, 0, 3, 0)
        # Asking again renews and returns the same fence.
        again = await store.semaphore_acquire(name, 3, "h1", 60 * SECOND, False)
        assert again == adm.stores.SemaphoreReply(True, fences[1], 3, 0)
        assert await store.semaphore_state(name) == (3, 0)
        assert await store.semaphore_release(name, "h1") is True
        assert await store.semaphore_release(name, "h1") is False
        granted = await store.semaphore_acquire(name, 3, "h3", 60 * SECOND, False)
        assert granted.granted
        assert granted.fence > fences[-1]
        assert granted.in_use == 3
        # Its keys live at least as long as its leases.
        h = store._semaphore_keys(name, "h")[0]
        assert 59_000 < redis_server.command("PTTL", h) <= 60_000  # type: ignore[operator]

    with_store(redis_server, body)


def test_fifo_a_newcomer_never_passes_a_live_waiter(redis_server: RedisServer) -> None:
    name, lease = unique("fifo"), 60 * SECOND

    async def body(store: Redis) -> None:
        assert (await store.semaphore_acquire(name, 2, "a", lease, True)).granted
        assert (await store.semaphore_acquire(name, 2, "a2", lease, True)).granted
        assert await store.semaphore_acquire(name, 2, "b", lease, True) == (False, 0, 2, 0)
        assert await store.semaphore_acquire(name, 2, "c", lease, True) == (False, 0, 2, 1)
        assert await store.semaphore_acquire(name, 2, "c", lease, True) == (False, 0, 2, 1)
        assert await store.semaphore_state(name) == (2, 2)
        assert await store.semaphore_release(name, "a")
        # One lease free, b is owed it: c (behind b) and a newcomer are refused, queued or
        # not, and told who is ahead when queued.
        assert await store.semaphore_acquire(name, 2, "c", lease, True) == (False, 0, 1, 1)
        assert await store.semaphore_acquire(name, 2, "d", lease, False) == (False, 0, 1, 0)
        assert await store.semaphore_acquire(name, 2, "d", lease, True) == (False, 0, 1, 2)
        # Two free, two ahead of d: c (one ahead) may take the second while b has not asked.
        assert await store.semaphore_release(name, "a2")
        c = await store.semaphore_acquire(name, 2, "c", lease, True)
        assert c.granted
        assert c.in_use == 1
        assert await store.semaphore_acquire(name, 2, "d", lease, True) == (False, 0, 1, 1)
        b = await store.semaphore_acquire(name, 2, "b", lease, False)  # queued: no need to say
        assert b.granted
        assert b.fence > c.fence
        assert await store.semaphore_state(name) == (2, 1)
        # A queued holder asking without queue keeps its place, is told nothing is ahead.
        assert await store.semaphore_acquire(name, 2, "d", lease, False) == (False, 0, 2, 0)
        assert await store.semaphore_state(name) == (2, 1)
        # A queued waiter that gives up (release) lets the ones behind move up.
        assert await store.semaphore_acquire(name, 2, "e", lease, True) == (False, 0, 2, 1)
        assert await store.semaphore_release(name, "d") is True
        assert await store.semaphore_acquire(name, 2, "e", lease, True) == (False, 0, 2, 0)
        assert await store.semaphore_release(name, "b")
        e = await store.semaphore_acquire(name, 2, "e", lease, True)
        assert e.granted
        assert e.fence > b.fence
        assert await store.semaphore_state(name) == (2, 0)

    with_store(redis_server, body)


def test_expired_leases_and_waiters_drop_out(redis_server: RedisServer) -> None:
    name, short, long = unique("expiry"), 50_000, 60 * SECOND

    async def body(store: Redis) -> None:
        h, q = store._semaphore_keys(name, "hq")
        assert (await store.semaphore_acquire(name, 2, "other", long, True)).granted
        dead = await store.semaphore_acquire(name, 2, "dead-holder", short, True)
        assert dead.granted
        assert dead.in_use == 2
        assert await store.semaphore_acquire(name, 2, "dead-waiter", short, True) == (
            False, 0, 2, 0,
        )  # fmt: skip
        assert await store.semaphore_acquire(name, 2, "live", long, True) == (False, 0, 2, 1)

        async def only_live_left() -> bool:
            return await store.semaphore_state(name) == (1, 1)

        # Neither dead one asks again: after ``short`` both are gone, without a sweeper.
        await wait_until(only_live_left, "the dead lease and waiter to expire")
        assert redis_server.command("ZCARD", h) == 2  # still stored: nobody dropped them yet
        assert redis_server.command("ZCARD", q) == 2
        live = await store.semaphore_acquire(name, 2, "live", long, True)
        assert live.granted
        assert live.in_use == 2
        assert live.fence > dead.fence
        # The same round trip dropped both.
        assert sorted(redis_server.command("ZRANGE", h, 0, -1)) == [b"live", b"other"]  # type: ignore[type-var]
        assert redis_server.command("ZCARD", q) == 0
        # An expired lease is not renewed, nor released, nor granted back by a renewal.
        assert await store.semaphore_release(name, "dead-holder") is False
        assert await store.semaphore_renew(name, ["dead-holder", "live"], long) == [False, True]
        assert await store.semaphore_state(name) == (2, 0)

    with_store(redis_server, body)


def test_a_semaphore_whose_members_all_expired_leaves_no_keys(redis_server: RedisServer) -> None:
    name = unique("gone")

    async def body(store: Redis) -> None:
        assert (await store.semaphore_acquire(name, 1, "a", 30_000, True)).granted
        assert not (await store.semaphore_acquire(name, 1, "b", 30_000, True)).granted
        h, f, q, e, n = store._semaphore_keys(name, "hfqen")

        def left() -> bool:
            return all(redis_server.command("EXISTS", key) == 0 for key in (h, f, q, e))

        await wait_until(left, "the semaphore's keys to expire")
        assert redis_server.command("EXISTS", n) == 1  # the sequence stays

    with_store(redis_server, body)


def test_renew_extends_and_reports_each(redis_server: RedisServer) -> None:
    name = unique("renew")

    async def body(store: Redis) -> None:
        h = store._semaphore_keys(name, "h")[0]
        assert (await store.semaphore_acquire(name, 2, "a", 1 * SECOND, False)).granted
        assert (await store.semaphore_acquire(name, 2, "b", 1 * SECOND, False)).granted
        before = float(redis_server.command("ZSCORE", h, "a"))  # type: ignore[arg-type]
        assert await store.semaphore_renew(name, ["a", "nobody"], 90 * SECOND) == [True, False]
        after = float(redis_server.command("ZSCORE", h, "a"))  # type: ignore[arg-type]
        assert after >= before + 89 * SECOND
        assert 89_000 < redis_server.command("PTTL", h) <= 90_000  # type: ignore[operator]
        assert await store.semaphore_renew(name, [], SECOND) == []
        # Renewal does not grant: "nobody" holds nothing.
        assert await store.semaphore_state(name) == (2, 0)

    with_store(redis_server, body)


def test_fences_keep_increasing_when_the_counter_is_lost(redis_server: RedisServer) -> None:
    name = unique("fence")

    async def body(store: Redis) -> None:
        n = store._semaphore_keys(name, "n")[0]
        fences = []
        for i in range(5):
            fences.append((await store.semaphore_acquire(name, 10, f"h{i}", SECOND, False)).fence)
            if i == 2:
                redis_server.command("DEL", n)  # as an evicting maxmemory-policy would
        assert fences == sorted(set(fences))
        assert redis_server.command("TTL", n) == -1  # the counter never expires

    with_store(redis_server, body)


def test_fences_survive_a_server_restart() -> None:
    name = "fence-restart"

    async def scenario(server: RedisServer) -> None:
        async with opened(server, timeout=5.0) as store:
            first = await store.semaphore_acquire(name, 1, "a", SECOND, False)
            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)  # no persistence: everything is gone
            assert await store.semaphore_state(name) == (0, 0)
            second = await store.semaphore_acquire(name, 1, "a", SECOND, False)
            assert second.granted
            assert second.fence > first.fence

    with RedisServer() as server:
        run(scenario(server))


# ----------------------------------------------------------------------- NOSCRIPT


def _script_loads(server: RedisServer) -> int:
    """How many scripts the server was sent whole (EVAL: the reload after NOSCRIPT)."""
    info = bytes(server.command("INFO", "commandstats"))  # type: ignore[arg-type]
    for line in info.decode().splitlines():
        if line.startswith("cmdstat_eval:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def test_script_flush_between_calls(redis_server: RedisServer) -> None:
    async def body(store: Redis) -> None:
        name = unique("flush")
        calls: list[Callable[[], Coroutine[Any, Any, object]]] = [
            lambda: store.register("TokenBucket", name, {"rate": 1}),
            lambda: store.rate(name, None, SECOND, 100, 1, 0),
            lambda: store.rate_many(name, None, SECOND, 100, [(1, 0), (1, -1)]),
            lambda: store.rate_batch(name, SECOND, 100, [(b"a", 1, 0), (None, 1, 0)]),
            lambda: store.rate_give_back(name, None, SECOND, 1, 0),
            lambda: store.semaphore_acquire(name, 1, "a", SECOND, True),
            lambda: store.semaphore_renew(name, ["a"], SECOND),
            lambda: store.semaphore_state(name),
            lambda: store.semaphore_release(name, "a"),
        ]
        assert len(calls) == len(SCRIPTS)
        for call in calls:
            redis_server.command("SCRIPT", "FLUSH")
            loads = _script_loads(redis_server)
            await call()
            assert _script_loads(redis_server) == loads + 1  # the NOSCRIPT path really ran
            await call()  # and the script stays loaded
            assert _script_loads(redis_server) == loads + 1

    with_store(redis_server, body)


def test_script_flush_mid_load_loses_and_doubles_nothing(redis_server: RedisServer) -> None:
    """16 tasks charge one bucket while the scripts are flushed again and again: no error
    reaches a caller, and the TAT moved by exactly one interval per admitted charge (a
    NOSCRIPT reply means the script did not run, so the retry never charges twice)."""
    name, T, tasks, per_task = unique("flush-load"), SECOND, 16, 60

    async def body(store: Redis) -> None:
        first = await store.rate(name, None, T, 10**9, 1, 0)
        loads = _script_loads(redis_server)
        done = 0

        async def charge() -> None:
            nonlocal done
            for _ in range(per_task):
                assert (await store.rate(name, None, T, 10**9, 1, 0)).admitted
                done += 1

        async def flush() -> None:
            while done < tasks * per_task:
                await asyncio.to_thread(redis_server.command, "SCRIPT", "FLUSH")
                await asyncio.sleep(0.002)  # noqa: ADM401 - a test's pacing, not a retry

        await asyncio.gather(flush(), *(charge() for _ in range(tasks)))
        assert _script_loads(redis_server) > loads
        assert stored_tat(redis_server, store._bucket_key(name, None)) == (
            first.tat_us + tasks * per_task * T
        )

    with_store(redis_server, body)


def test_script_flush_mid_load_with_batches_over_many_keys(redis_server: RedisServer) -> None:
    """16 tasks charge a keyed limiter's 40 keys (each task its own order of them) while the
    scripts are flushed again and again: the limiter sends what its callers ask for while a
    round trip is in flight as `rate_batch` calls mixing keys (and repeating some), no error
    reaches a caller, and each key's TAT moved by exactly one interval per admitted charge
    on it."""
    name, tasks, per_task, keys = unique("flush-keys"), 16, 60, 40

    async def body(store: Redis) -> None:
        batches: list[int] = []
        rate_batch = store.rate_batch

        async def counted(*args: Any) -> list[RateReply]:
            batches.append(len({key for key, _, _ in args[3]}))
            return await rate_batch(*args)

        store.rate_batch = counted  # type: ignore[method-assign]
        per_key = adm.KeyedTokenBucket(rate=1, per=60, burst=10**4, name=name, store=store)
        await per_key.acquire("warm", timeout=0)
        loads = _script_loads(redis_server)
        done = 0

        async def charge(task: int) -> None:
            nonlocal done
            for i in range(per_task):
                await per_key.acquire(b"k%d" % ((task * 7 + i) % keys), timeout=0)
                done += 1

        async def flush() -> None:
            while done < tasks * per_task:
                await asyncio.to_thread(redis_server.command, "SCRIPT", "FLUSH")
                await asyncio.sleep(0.002)  # noqa: ADM401 - a test's pacing, not a retry

        start = server_now(redis_server)
        await asyncio.gather(flush(), *(charge(task) for task in range(tasks)))
        end = server_now(redis_server)
        assert _script_loads(redis_server) > loads
        assert max(batches) > 1  # batches mixing keys went
        charged: dict[bytes, int] = {}
        for task in range(tasks):
            for i in range(per_task):
                key = b"k%d" % ((task * 7 + i) % keys)
                charged[key] = charged.get(key, 0) + 1
        for key, count in charged.items():
            tat = stored_tat(redis_server, store._bucket_key(name, key))
            assert tat is not None
            assert start <= tat - count * 60 * SECOND <= end, key  # its first charge's now

    with_store(redis_server, body)


def test_other_server_errors_are_not_retried(redis_server: RedisServer) -> None:
    async def body(store: Redis) -> None:
        name = unique("wrongtype")
        key = store._bucket_key(name, None)
        redis_server.command("LPUSH", key, "x")
        await store.rate(unique("loaded"), None, SECOND, 1, 1, 0)  # the script is loaded
        loads = _script_loads(redis_server)
        with pytest.raises(adm.StoreUnavailable, match="WRONGTYPE") as info:
            await store.rate(name, None, SECOND, 1, 1, 0)
        assert isinstance(info.value.__cause__, redis.ResponseError)
        assert _script_loads(redis_server) == loads

    with_store(redis_server, body)


def test_many_concurrent_callers_share_one_limit(redis_server: RedisServer) -> None:
    """200 concurrent try-style charges on a bucket of 50: exactly 50 admitted."""
    name = unique("concurrent")

    async def body(store: Redis) -> None:
        replies = await asyncio.gather(  # noqa: ADM101 - 200 at once is the test's point
            *(store.rate(name, b"k", 3600 * SECOND, 50, 1, 0) for _ in range(200))
        )
        assert sum(r.admitted for r in replies) == 50
        tats = sorted(r.tat_us for r in replies if r.admitted)
        assert all(b - a == 3600 * SECOND for a, b in itertools.pairwise(tats))

    with_store(redis_server, body)


def test_semaphores_answer_as_the_contracts_reference_does(redis_server: RedisServer) -> None:
    """2,000 seeded random requests answered as MemoryStore answers (store_contract.py)."""

    async def body(store: Redis) -> None:
        await semaphores_answer_as_the_reference(store, unique("reference"), 3600 * SECOND)

    with_store(redis_server, body)


def test_a_dead_waiter_drops_out_of_the_queue_before_its_lease(redis_server: RedisServer) -> None:
    """store_contract.py's check: a queue entry outlives its waiter's last ask by
    QUEUE_ENTRY_US at most, whatever the lease."""

    async def body(store: Redis) -> None:
        await a_dead_waiters_entry_expires_before_its_lease(store, unique("dead"))

    with_store(redis_server, body)


def test_rates_coalesced_or_not_answer_as_the_contracts_reference_does(
    redis_server: RedisServer,
) -> None:
    """`rate_many` (one script call) answers as MemoryStore's one-after-the-other `rate`
    calls at the same server now, interleaved with single `rate` calls and give-backs
    (store_contract.py), for a bucket and a keyed bucket's key."""

    async def body(store: Redis) -> None:
        await rates_answer_as_the_reference(store, unique("rates"))

    with_store(redis_server, body)


def test_rate_many_decides_in_order_and_writes_the_last_charge(redis_server: RedisServer) -> None:
    name = unique("many")

    async def body(store: Redis) -> None:
        replies = await store.rate_many(name, None, SECOND, 3, [(1, 0), (2, 0), (1, 0)])
        assert [r.admitted for r in replies] == [True, True, False]
        assert replies[1].tat_us == replies[0].now_us + 3 * SECOND  # the last charge's TAT
        assert replies[2].wait_us == SECOND  # refused: 1 s until it fits
        assert stored_tat(redis_server, b"admission:{b:%s}" % name.encode()) == replies[1].tat_us
        with pytest.raises(ValueError, match="cost must be between 1 and burst"):
            await store.rate_many(name, None, SECOND, 3, [(4, 0)])
        with pytest.raises(ValueError, match=f"1 to {RATE_MANY_MAX} requests"):
            await store.rate_many(name, None, SECOND, 3, [])

    with_store(redis_server, body)


def test_rate_batch_writes_each_charged_key_once_with_its_ttl(redis_server: RedisServer) -> None:
    """Each key charged by a batch holds its last charge's TAT (a refusal after it changes
    nothing), with the TTL of the time until its bucket is full again."""
    name = unique("batch")

    async def body(store: Redis) -> None:
        batch = [(b"a", 1, 0), (b"b", 3, 0), (b"a", 2, 0), (b"b", 1, 0), (b"c", 1, 0)]
        assert store.rate_batch_is_one_round_trip  # one server: the limiters batch keys
        replies = await store.rate_batch(name, SECOND, 3, batch)
        assert [r.admitted for r in replies] == [True, True, True, False, True]
        now = replies[0].now_us
        assert {r.now_us for r in replies} == {now}  # one reading of the clock
        for key, tat in ((b"a", now + 3 * SECOND), (b"b", now + 3 * SECOND), (b"c", now + SECOND)):
            bucket = store._bucket_key(name, key)
            assert stored_tat(redis_server, bucket) == tat
            ttl = int(redis_server.command("PTTL", bucket))  # type: ignore[call-overload]
            assert 0 < ttl <= (tat - now) // 1000
        with pytest.raises(ValueError, match="cost must be between 1 and burst"):
            await store.rate_batch(name, SECOND, 3, [(b"a", 4, 0)])
        with pytest.raises(ValueError, match=f"1 to {RATE_MANY_MAX} requests"):
            await store.rate_batch(name, SECOND, 3, [])
        with pytest.raises(ValueError, match="a key must be bytes or None"):
            await store.rate_batch(name, SECOND, 3, [("a", 1, 0)])  # type: ignore[list-item]

    with_store(redis_server, body)


def test_the_largest_batches_are_decided_in_one_reply(redis_server: RedisServer) -> None:
    """`RATE_MANY_MAX` requests of the longest figures a store answers (waits and TATs up
    to the stores' range, MAX_SPAN_US, and past it for a refusal: 16 digits, any wait
    allowed): the script's one status line stays within the reader's 64 KiB line limit,
    for a `rate_batch` over as many keys and a `rate_many` on one bucket."""
    name = unique("largest")
    day = 24 * 3600 * SECOND

    async def body(store: Redis) -> None:
        batch = [(b"key-%d" % i, 1000, -1) for i in range(RATE_MANY_MAX)]
        replies = await store.rate_batch(name, day, 1000, batch)
        assert len(replies) == RATE_MANY_MAX
        assert all(r.admitted for r in replies)
        replies = await store.rate_batch(name, day, 1000, batch)  # a wait of 1,000 days
        assert min(r.wait_us for r in replies) > 999 * day
        many = await store.rate_many(name, None, day, 1000, [(1000, -1)] * RATE_MANY_MAX)
        assert not many[-1].admitted
        assert many[-1].wait_us > MAX_SPAN_US  # 10**15 µs and more

    with_store(redis_server, body)


def test_rate_batch_over_a_key_of_another_type_fails_as_rate_many_does(
    redis_server: RedisServer,
) -> None:
    """A key holding another type (a hash) fails the batch with WRONGTYPE, as `rate_many`
    does on it, before anything is written: never read as empty and overwritten."""
    name = unique("wrongtype-batch")

    async def body(store: Redis) -> None:
        hashed = store._bucket_key(name, b"h")
        redis_server.command("HSET", hashed, "f", "v")
        for call in (
            store.rate_many(name, b"h", SECOND, 10, [(1, 0)]),
            store.rate_batch(name, SECOND, 10, [(b"z", 1, 0), (b"h", 1, 0), (b"y", 1, 0)]),
        ):
            with pytest.raises(adm.StoreUnavailable, match="WRONGTYPE"):
                await call
        assert redis_server.command("TYPE", hashed) in ("hash", b"hash")
        for key in (b"z", b"y"):
            assert redis_server.command("EXISTS", store._bucket_key(name, key)) == 0

    with_store(redis_server, body)


def test_absurd_waits_and_buckets_answer_exactly_or_are_refused(redis_server: RedisServer) -> None:
    """store_contract.py's check of the stores' range (MAX_SPAN_US): a batch of 1,024
    requests with a thousand-year wait (or none) answers as MemoryStore does, exactly, and
    a bucket or lease past the range is a ValueError (the script's doubles rounded such
    TATs, and wrote -2**63 past 2**63)."""

    async def body(store: Redis) -> None:
        await absurd_waits_and_buckets_stay_exact(store, unique("absurd"))

    with_store(redis_server, body)
