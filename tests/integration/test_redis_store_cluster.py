"""The Redis store on a real Redis Cluster of three masters (three redis-server processes on
loopback, `redis_server.RedisCluster`), where a limiter's keys live on different nodes:

- a keyed limiter over 1,000 keys spread over all three nodes (each node holds some, checked
  on the nodes themselves): every key admits exactly its burst, also when its callers ask
  at once (the coalescing path), and no CROSSSLOT or MOVED reaches a caller;
- a `TokenBucket` within its GCRA bound, a distributed `Semaphore` (never more holders than
  permits, fencing tokens strictly increasing);
- ``SCRIPT FLUSH`` on every node mid-load: no error reaches a caller;
- a node killed mid-load (SIGKILL): the other nodes' keys keep being decided by the store,
  the dead node's do what ``on_store_error`` says, every call bounded, the counts add up;
- a plain client (or URL) of one node: a key that another node serves raises a
  `ConfigError` saying to use a ``RedisCluster`` client (never an answer of the wrong node,
  never a fallback);
- processes (spawn) sharing one keyed limiter over the cluster;
- a slot moved to another node mid-load (``ASK``, then ``MOVED``): never a wrong answer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio
import redis_store_workers as workers
import spawned
from postgres import run, wait_until
from redis_server import RedisCluster, RedisServer
from spawned import BOUND

import admission as adm
from admission.stores import remote
from admission.stores.redis import Redis

SECOND = 1_000_000
#: A bound on any one call past its timeout, for a busy machine (a hang guard).
SLACK = 2.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster(masters=3) as started:
        yield started


def _background_here() -> list[asyncio.Task[Any]]:
    """The limiters' background calls on this loop (other tests' loops, closed, may have
    left theirs in the set until its amortised purge)."""
    loop = asyncio.get_running_loop()
    return [task for task in remote._background if task.get_loop() is loop]


def _name(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex[:10]}"


def _client(cluster: RedisCluster) -> redis.asyncio.RedisCluster:
    return redis.asyncio.RedisCluster(host=cluster.host, port=cluster.port)


@contextlib.asynccontextmanager
async def _store(cluster: RedisCluster, timeout: float = 5.0) -> AsyncIterator[Redis]:
    """A store on a ``RedisCluster`` client of ``cluster``; both closed after."""
    client = _client(cluster)
    store = adm.stores.Redis(client=client, timeout=timeout)
    try:
        yield store
    finally:
        await store.aclose()  # its own connections to the nodes
        await client.aclose()


def _keys_per_node(cluster: RedisCluster, pattern: bytes) -> dict[int, int]:
    """How many keys matching ``pattern`` each node holds (SCAN on each node itself)."""
    found = {}
    for node in cluster.nodes:
        cursor, count = b"0", 0
        while True:
            reply = node.command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            assert isinstance(reply, list)
            cursor, keys = reply
            count += len(keys)
            if cursor == b"0":
                break
        found[node.port] = count
    return found


async def _take_all(limiter: Any, requests: list[str], tasks: int) -> collections.Counter[str]:
    """``tasks`` callers take ``requests`` (keys) in their order without waiting, so that a
    key's consecutive requests are in flight together; the admitted count per key."""
    admitted: collections.Counter[str] = collections.Counter()
    pending = iter(requests)

    async def caller() -> None:
        for key in pending:
            try:
                await limiter.acquire(key, timeout=0)
                admitted[key] += 1
            except adm.AcquireTimeout:
                pass

    await asyncio.gather(*(caller() for _ in range(tasks)))
    return admitted


def test_the_nodes_serve_a_third_of_the_slots_each(cluster: RedisCluster) -> None:
    maps = [cluster.slot_map(node) for node in cluster.nodes]
    assert all(m == maps[0] for m in maps)
    assert [port for _, _, port in maps[0]] == [node.port for node in cluster.nodes]
    with pytest.raises(RuntimeError, match="CROSSSLOT"):  # a script over slots really fails
        cluster.nodes[0].command("EVAL", "return 1", 2, "{a}x", "{b}x")


def test_a_keyed_limiter_over_a_thousand_keys_on_three_nodes(cluster: RedisCluster) -> None:
    """Burst 3, 1 token an hour: each of 1,000 keys asked 5 times, by 64 callers whose
    requests on one key are in flight together, admits exactly 3, wherever its node."""
    name, keys = _name("keyed"), [f"user:{i}" for i in range(1000)]

    coalesced = 0  # round trips deciding a key's requests asked for while one was in flight

    async def scenario() -> collections.Counter[str]:
        nonlocal coalesced
        async with _store(cluster) as store:
            per_user = adm.KeyedTokenBucket(rate=1, per=3600, burst=3, name=name, store=store)
            await per_user.acquire("warm-up")  # registered: the callers start together
            rate_many = store.rate_many

            def counted(*args: Any) -> Any:
                nonlocal coalesced
                coalesced += 1
                return rate_many(*args)

            store.rate_many = counted  # type: ignore[method-assign]
            requests = [key for key in keys for _ in range(5)]
            admitted = await _take_all(per_user, requests, 64)
            # On the store's own connections to each node, not the client's.
            assert sorted(store._nodes) == sorted(f"{n.host}:{n.port}" for n in cluster.nodes)
            return admitted

    admitted = run(scenario())
    assert admitted == dict.fromkeys(keys, 3)
    assert coalesced > 0
    on_nodes = _keys_per_node(cluster, f"admission:{{k:{len(name)}:{name}:user:*".encode())
    assert sum(on_nodes.values()) == len(keys)
    assert all(count > 200 for count in on_nodes.values()), on_nodes  # about 333 each


def test_a_token_bucket_holds_its_bound_on_the_cluster(cluster: RedisCluster) -> None:
    """20 tasks on one bucket of 100/s (burst 10) for 1.5 s: at most burst + rate x time."""
    name = _name("bucket")

    async def scenario() -> tuple[int, float]:
        async with _store(cluster) as store:
            bucket = adm.TokenBucket(rate=100, per=1, burst=10, name=name, store=store)
            await bucket.acquire()
            await asyncio.sleep(0.2)  # full again
            admitted = 0
            start = time.monotonic()
            end = start + 1.5

            async def task() -> None:
                nonlocal admitted
                while time.monotonic() < end:
                    try:
                        await bucket.acquire(timeout=0)
                        admitted += 1
                    except adm.AcquireTimeout:
                        await asyncio.sleep(0.005)  # noqa: ADM401 - the test's pacing

            await asyncio.gather(*(task() for _ in range(20)))
            return admitted, time.monotonic() - start

    admitted, elapsed = run(scenario())
    assert 0 < admitted <= 10 + 100 * elapsed + 1
    assert cluster.node_of(f"admission:{{b:{name}}}").command("EXISTS", f"admission:{{b:{name}}}")


def test_semaphores_on_three_nodes(cluster: RedisCluster) -> None:
    """Three semaphores of 3 whose keys are on three different nodes, 10 tasks each taking
    a permit 10 times: never more than 3 holders of one, fences strictly increasing."""
    store_keys = Redis.__new__(Redis)
    store_keys._prefix = b"admission"
    names: dict[int, str] = {}
    while len(names) < 3:  # a name per node
        name = _name("sem")
        node = cluster.node_of(store_keys._semaphore_keys(name, "h")[0])
        names.setdefault(node.port, name)

    async def scenario() -> None:
        async with _store(cluster) as store:
            for name in names.values():
                sem = adm.Semaphore(3, name=name, store=store, lease="30s")
                holding = most = 0
                fences: list[list[int]] = [[] for _ in range(10)]

                async def task(mine: list[int], sem: Any = sem) -> None:
                    nonlocal holding, most
                    for _ in range(10):
                        async with sem as lease:
                            holding += 1
                            most = max(most, holding)
                            mine.append(lease.fence)
                            await asyncio.sleep(0.002)
                            holding -= 1

                await asyncio.gather(*(task(mine) for mine in fences))
                assert most == 3, name  # never more, and the permits were all used
                every = [f for mine in fences for f in mine]
                assert len(set(every)) == len(every) == 100
                for mine in fences:
                    assert all(a < b for a, b in itertools.pairwise(mine))
                assert await store.semaphore_state(name) == (0, 0)

    run(scenario())
    assert len(set(names.values())) == 3


def test_script_flush_on_every_node_mid_load(cluster: RedisCluster) -> None:
    """Every node loses its scripts again and again while 32 callers take tokens of 300
    keys: a call that meets NOSCRIPT is sent again with EVAL, no caller sees an error, and
    each key still admits exactly its burst."""
    name, keys = _name("flush"), [f"user:{i}" for i in range(300)]

    async def scenario() -> collections.Counter[str]:
        async with _store(cluster) as store:
            per_user = adm.KeyedTokenBucket(rate=1, per=3600, burst=4, name=name, store=store)
            await per_user.acquire("warm-up")
            requests = [key for _ in range(6) for key in keys]
            load = asyncio.ensure_future(_take_all(per_user, requests, 32))
            while not load.done():
                for node in cluster.nodes:
                    await asyncio.to_thread(node.command, "SCRIPT", "FLUSH")
                await asyncio.sleep(0.02)
            return await load

    evals_before = _evals(cluster)
    assert run(scenario()) == dict.fromkeys(keys, 4)
    assert _evals(cluster) > evals_before  # calls sent again with EVAL, on NOSCRIPT


def _evals(cluster: RedisCluster) -> int:
    """EVAL commands the nodes ran (INFO commandstats), all nodes together."""
    total = 0
    for node in cluster.nodes:
        stats = bytes(node.command("INFO", "commandstats")).decode()  # type: ignore[arg-type]
        if "cmdstat_eval:calls=" in stats:
            total += int(stats.split("cmdstat_eval:calls=")[1].split(",")[0])
    return total


@pytest.mark.parametrize("given", [False, True], ids=["url", "given redis.asyncio.Redis"])
@pytest.mark.parametrize("mode", ["closed", "open"])
def test_a_plain_client_of_one_node_says_to_use_a_cluster_client(
    cluster: RedisCluster, given: bool, mode: str
) -> None:
    """A key another node serves answers MOVED: the caller gets a `ConfigError` naming
    ``RedisCluster``, whatever ``on_store_error`` says (a misconfiguration is no outage: no
    fallback, no admission), and the breaker is not tripped. A key of the node reached is
    decided by that node, as a cluster client would have it decided."""
    node = cluster.nodes[0]
    name = _name("plain")
    while cluster.node_of(f"admission:{{c:{name}}}") is not node:  # registered on node 0
        name = _name("plain")
    key_here = next(k for k in map(str, itertools.count()) if _on(cluster, name, k) is node)
    key_away = next(k for k in map(str, itertools.count()) if _on(cluster, name, k) is not node)

    async def scenario() -> None:
        client = redis.asyncio.Redis(port=node.port) if given else None
        store = adm.stores.Redis(node.url(), client=client, timeout=2.0)
        per_user = adm.KeyedTokenBucket(
            rate=1, per=3600, burst=2, name=name, store=store, on_store_error=mode, instances=1
        )
        try:
            for _ in range(2):
                await per_user.acquire(key_here, timeout=0)
            with pytest.raises(adm.AcquireTimeout):
                await per_user.acquire(key_here, timeout=0)
            for _ in range(8):  # more than the breaker's 5 failures
                with pytest.raises(adm.ConfigError, match="RedisCluster") as info:
                    await per_user.acquire(key_away, timeout=0)
                assert "MovedError" in str(info.value)
            stats = per_user.stats()
            assert (stats.admitted, per_user._counts.fallbacks) == (2, 0)
            assert per_user._breaker.state == "closed"
            with pytest.raises(adm.ConfigError, match="RedisCluster"):  # the store's own call
                await store.rate(name, key_away.encode(), SECOND, 2, 1, 0)
        finally:
            await store.aclose()
            if client is not None:
                await client.aclose()

    run(scenario())


def _on(cluster: RedisCluster, name: str, key: str) -> RedisServer:
    """The node of ``key``'s bucket in keyed limiter ``name``."""
    return cluster.node_of(_bucket(name, key))


def _are_on(cluster: RedisCluster, name: str, keys: list[str], node: RedisServer) -> list[bool]:
    """Whether each key's bucket in keyed limiter ``name`` is on ``node``."""
    return [on is node for on in cluster.nodes_of([_bucket(name, key) for key in keys])]


def _bucket(name: str, key: str) -> str:
    return f"admission:{{k:{len(name)}:{name}:{key}}}"


MODES = ("closed", "open", "local")


def test_a_node_killed_mid_load() -> None:
    """Three keyed limiters, one per ``on_store_error``, 300 keys each, every key's burst
    (2) used up; then a node is killed (SIGKILL) and 16 callers per limiter keep asking for
    every key, before and after the others mark it failed. The other nodes' keys are still
    decided by the store (refused: their buckets are empty; never a fallback, never an
    error), the dead node's do what ``on_store_error`` says (raise, admit, or the
    in-process share of 1 per key), every call returns within the store's timeout (plus
    room for a busy machine), and the counts add up."""
    keys = [f"user:{i}" for i in range(300)]
    timeout = 1.0  # for a loaded machine (a dead node's calls take it: the client retries)
    outcomes = {mode: collections.Counter[tuple[bool, str]]() for mode in MODES}
    admitted_dead = {mode: collections.Counter[str]() for mode in MODES}
    errors: list[str] = []  # of the live nodes' keys
    longest = 0.0

    async def ask(mode: str, limiter: Any, key: str, dead: bool) -> None:
        nonlocal longest
        start = time.monotonic()
        try:
            await limiter.acquire(key, timeout=0)
            outcome = "admitted"
            if dead:
                admitted_dead[mode][key] += 1
        except adm.AcquireTimeout:
            outcome = "refused"
        except adm.StoreUnavailable as error:
            outcome = "unavailable"
            if not dead:
                errors.append(f"{mode}: {error} (cause: {error.__cause__!r})")
        longest = max(longest, time.monotonic() - start)
        outcomes[mode][dead, outcome] += 1

    async def rounds(limiters: dict[str, Any], on_dead: dict[str, dict[str, bool]]) -> None:
        async def caller(mode: str, pending: Iterator[str]) -> None:
            for key in pending:
                await ask(mode, limiters[mode], key, on_dead[mode][key])

        callers = []
        for mode in MODES:
            pending = iter([key for _ in range(3) for key in keys])
            callers += [caller(mode, pending) for _ in range(16)]
        await asyncio.gather(*callers)

    async def scenario(cluster: RedisCluster) -> None:
        dead_node = cluster.nodes[2]
        async with _store(cluster, timeout) as store:
            limiters = {
                mode: adm.KeyedTokenBucket(
                    rate=1,
                    per=3600,
                    burst=2,
                    name=_name(f"kill-{mode}"),
                    store=store,
                    on_store_error=mode,
                    instances=2,
                )
                for mode in MODES
            }
            for limiter in limiters.values():
                used = await _take_all(limiter, [k for k in keys for _ in range(2)], 16)
                assert used == dict.fromkeys(keys, 2)
            on_dead = {
                mode: dict(
                    zip(keys, _are_on(cluster, limiters[mode].name, keys, dead_node), strict=True)
                )
                for mode in MODES
            }
            await asyncio.to_thread(dead_node.kill)
            await rounds(limiters, on_dead)
            survivor = cluster.nodes[0]
            await wait_until(
                lambda: b"master,fail " in bytes(survivor.command("CLUSTER", "NODES")),  # type: ignore[arg-type]
                "the dead node marked failed",
                every=0.05,
            )
            await rounds(limiters, on_dead)
            # The dead node's calls the limiters left to finish (the client retries them).
            await wait_until(lambda: not _background_here(), "the calls left", within=BOUND)

        assert longest < timeout + SLACK
        for mode, limiter in limiters.items():
            seen = outcomes[mode]
            dead_calls = 6 * sum(on_dead[mode].values())
            live_calls = 6 * len(keys) - dead_calls
            assert 0 < dead_calls < live_calls
            assert seen[False, "refused"] == live_calls, (mode, seen, errors[:3])  # by the store
            if mode == "closed":
                assert seen[True, "unavailable"] == dead_calls, seen
                assert limiter._counts.fallbacks == 0
            else:
                assert seen[True, "unavailable"] == 0, (mode, seen)
                assert limiter._counts.fallbacks == dead_calls  # none for the live keys
            if mode == "open":
                assert seen[True, "admitted"] == dead_calls
            if mode == "local":
                # The in-process share: burst ceil(2 / 2) = 1 per key, refilling 1 in 2 h.
                assert set(admitted_dead[mode].values()) == {1}
                assert len(admitted_dead[mode]) == sum(on_dead[mode].values())
            assert limiter.stats().admitted == 2 * len(keys) + seen[True, "admitted"]
            assert limiter._counts.store_errors >= (dead_calls if mode == "closed" else 1)

    with RedisCluster(masters=3, node_timeout_ms=1000, full_coverage=False) as cluster:
        run(scenario(cluster), timeout=120)


def test_clusterdown_fails_at_once_with_full_coverage_required() -> None:
    """With ``cluster-require-full-coverage yes`` (Redis's default), once a killed master is
    marked failed every node answers ``CLUSTERDOWN``: a call on a live node's key fails with
    that reason (`StoreUnavailable`, not "no answer within" its timeout, which the client's
    sleeps and retries took before), counted by that node's breaker, which opens; nothing
    is left running in the background."""
    store_keys = adm.stores.Redis()

    async def scenario(cluster: RedisCluster) -> None:
        survivor, dead_node = cluster.nodes[0], cluster.nodes[2]
        name = next(
            name
            for name in (_name("down") for _ in range(1000))
            if cluster.node_of(store_keys._bucket_key(name, None)) is survivor
        )
        async with _store(cluster, timeout=1.0) as store:
            bucket = adm.TokenBucket(rate=1000, name=name, store=store)
            for _ in range(2):  # the second on the store's own connection to the survivor
                await bucket.acquire(timeout=0)
            await asyncio.to_thread(dead_node.kill)
            await wait_until(
                lambda: survivor.cluster_info()["cluster_state"] == "fail",
                "the cluster down",
                every=0.05,
            )
            for _ in range(3):
                with pytest.raises(adm.StoreUnavailable, match="ClusterDownError"):
                    await bucket.acquire(timeout=0)
            breaker = remote.store_breaker(store, f"{survivor.host}:{survivor.port}")
            assert breaker.state == "open"
            assert not _background_here()

    with RedisCluster(masters=3, node_timeout_ms=500, full_coverage=True) as cluster:
        run(scenario(cluster), timeout=120)


def test_a_cluster_url_gives_the_store_a_cluster_client_of_its_own(cluster: RedisCluster) -> None:
    """``redis+cluster://host:port,host:port`` (the scheme limits reads; two of the three
    nodes named, the client finds the third): a keyed limiter's keys spread over all three
    nodes, each admits exactly its burst, and `aclose` closes the client the store made."""
    name = _name("url")
    keys = [f"user:{i}" for i in range(90)]

    async def scenario() -> Any:
        nodes = ",".join(f"{node.host}:{node.port}" for node in cluster.nodes[:2])
        store = adm.stores.Redis(f"redis+cluster://{nodes}", timeout=5.0)
        assert store.label == f"redis+cluster://{nodes}"
        assert store.spread_over_servers
        per_user = adm.KeyedTokenBucket(rate=1, per=3600, burst=2, name=name, store=store)
        try:
            admitted = await _take_all(per_user, [key for key in keys for _ in range(3)], 16)
            assert admitted == dict.fromkeys(keys, 2)
        finally:
            await store.aclose()
        return store._client

    client = run(scenario())
    assert all(count > 0 for count in _keys_per_node(cluster, f"*{name}*".encode()).values())
    assert not any(conn.is_connected for node in client.get_nodes() for conn in node._connections)


def test_three_processes_share_a_keyed_limiter_over_the_cluster(cluster: RedisCluster) -> None:
    """3 processes (spawn) each ask for every one of 1,000 keys twice, 50 callers each, on
    one keyed limiter of burst 3 (1 token an hour): every key admits exactly 3 of its 6,
    whichever processes and nodes."""
    name, keys = _name("processes"), 1000
    started = []
    try:
        for _ in range(3):
            started.append(
                spawned.start(workers.keyed_pass_on_cluster, cluster.host, cluster.port, name, keys)
            )
        for process, conn in started:
            assert spawned.receive(conn, process) == "ready"
        for _, conn in started:
            conn.send("go")
        admitted = collections.Counter(i for p, c in started for i in spawned.receive(c, p))
        for process, _ in started:
            spawned.join(process)
    finally:
        for process, _ in started:
            if process.is_alive():
                os.kill(process.pid, signal.SIGKILL)
                process.join(spawned.BOUND)
    assert admitted == dict.fromkeys(range(keys), 3)


def test_a_slot_moved_to_another_node_mid_load(cluster: RedisCluster) -> None:
    """A key's slot moves to another node (as a resharding does), in two steps: its keys
    sent over while the source still serves the slot (it answers ``ASK``), then the slot
    given to the target (``MOVED``), while 16 callers use 300 other keys. Never a wrong
    answer: a key used up stays used up, a new key of that slot admits exactly its burst
    over the whole move. Once the slot has moved, the ``RedisCluster`` client follows
    ``MOVED`` and no caller sees an error; while it is moving, a call on its keys may fail
    (`StoreUnavailable`, "TTL exhausted": redis-py's asyncio cluster client sends ``ASKING``
    and the command on two connections of the target when it holds several, and the
    target then answers ``MOVED`` back to the source)."""
    from redis.crc import key_slot

    name = _name("moved")
    used_up = "user:moved"
    slot = key_slot(_bucket(name, used_up).encode())
    fresh = next(
        key
        for key in (f"fresh:{i}" for i in itertools.count())
        if key_slot(_bucket(name, key).encode()) == slot
    )
    source = _on(cluster, name, used_up)
    target = next(node for node in cluster.nodes if node is not source)
    others = [f"user:{i}" for i in range(300)]

    async def outcome(per_user: Any, key: str) -> str:
        try:
            await per_user.acquire(key, timeout=0)
        except adm.AcquireTimeout:
            return "refused"
        except adm.StoreUnavailable as error:
            return "unavailable" if "TTL exhausted" in str(error) else f"failed: {error}"
        return "admitted"

    async def scenario() -> tuple[dict[str, list[str]], collections.Counter[str]]:
        async with _store(cluster) as store:
            per_user = adm.KeyedTokenBucket(rate=1, per=3600, burst=3, name=name, store=store)
            assert await _take_all(per_user, [used_up] * 4, 1) == {used_up: 3}
            requests = [key for _ in range(4) for key in others]
            load = asyncio.ensure_future(_take_all(per_user, requests, 16))
            seen: dict[str, list[str]] = {}
            for step in ("moving", "moved"):
                await asyncio.to_thread(cluster.move_slot, slot, target, finish=step == "moved")
                seen[step] = [await outcome(per_user, key) for key in (used_up, fresh)]
            seen["fresh after"] = [await outcome(per_user, fresh) for _ in range(4)]
            return seen, await load

    try:
        seen, admitted = run(scenario())
    finally:
        cluster.move_slot(slot, source)  # as the other tests found it
    assert seen["moving"][0] in ("refused", "unavailable"), seen
    assert seen["moving"][1] in ("admitted", "unavailable"), seen
    assert seen["moved"] == ["refused", "admitted"], seen
    fresh_admitted = [seen["moving"][1], seen["moved"][1], *seen["fresh after"]]
    assert fresh_admitted.count("admitted") == 3, seen  # exactly its burst
    assert "unavailable" not in seen["fresh after"], seen
    assert admitted == dict.fromkeys(others, 3)


def test_calls_after_aclose_open_no_connections_of_the_store(cluster: RedisCluster) -> None:
    """After `aclose`, a call (a late give-back, a lease released in the background, a
    limiter still used) goes through the given ``RedisCluster`` client, which `aclose`
    leaves open: the store opens no connection of its own that nothing would close again
    (they were reopened, one per node, and left open)."""
    keys = [f"user:{i}" for i in range(30)]  # on every node

    async def scenario() -> None:
        client = _client(cluster)
        store = adm.stores.Redis(client=client, timeout=5.0)
        per_user = adm.KeyedTokenBucket(rate=1, per=3600, burst=2, name=_name("x"), store=store)
        try:
            for key in keys:
                await per_user.acquire(key, timeout=0)
            assert len(store._nodes) == 3
            await store.aclose()
            assert await _take_all(per_user, keys * 2, 4) == dict.fromkeys(keys, 1)
            assert store._nodes == {}
        finally:
            await store.aclose()
            await client.aclose()

    run(scenario())


def test_server_of_names_the_node_that_holds_the_state(cluster: RedisCluster) -> None:
    """`Redis.server_of` (the breaker a call goes through) names the node where the call's
    state is really written: keyed buckets whose keys hold braces (the hash tag ends at
    the first ``}``), a bucket, a semaphore, and the registration record."""
    name = _name("tags")
    keys = [b"plain", b"a}b", b"{x}", b"}{", b"{"]

    def holder(stored: bytes) -> list[str]:
        """The nodes holding ``stored`` (another node answers MOVED)."""
        found = []
        for node in cluster.nodes:
            with contextlib.suppress(RuntimeError):
                if node.command("EXISTS", stored) == 1:
                    found.append(f"{node.host}:{node.port}")
        return found

    async def scenario() -> list[tuple[list[str], list[str | None]]]:
        async with _store(cluster) as store:
            per_user = adm.KeyedTokenBucket(rate=1, per=3600, burst=2, name=name, store=store)
            bucket = adm.TokenBucket(rate=1, per=3600, burst=2, name=name, store=store)
            sem = adm.Semaphore(2, name=name, store=store, lease="30s")
            for key in keys:
                await per_user.acquire(key, timeout=0)
            await bucket.acquire(timeout=0)
            lease = await sem.acquire(timeout=0)
            said = {
                store._bucket_key(name, key): store.server_of("KeyedTokenBucket", name, key)
                for key in keys
            }
            said[store._bucket_key(name, None)] = store.server_of("TokenBucket", name, None)
            said[store._semaphore_keys(name, "h")[0]] = store.server_of("Semaphore", name, None)
            said[store._config_key(name)] = store.server_of("register", name, None)
            found = [(holder(stored), [server]) for stored, server in said.items()]
            await sem.release_and_wait(lease)
            return found

    for held, said in run(scenario()):
        assert held == said


def test_a_call_past_its_deadline_never_cancels_its_caller_later(cluster: RedisCluster) -> None:
    """A ``RedisCluster`` client with redis-py timeouts of its own (``socket_timeout``)
    and a node that answers nothing (SIGSTOP) while the store opens a connection to it:
    the caller gets `StoreUnavailable` at the store's timeout and goes on with its own
    work, which is never cancelled (redis-py bounds a wait with ``asyncio.timeout``, which
    cancels the task that began it: the caller's, which the call has left by then)."""
    name = _name("cancel")
    config_node = cluster.node_of(f"admission:{{c:{name}}}")
    target = next(node for node in cluster.nodes if node is not config_node)
    away = next(k for k in map(str, itertools.count()) if _on(cluster, name, k) is not target)
    here = next(k for k in map(str, itertools.count()) if _on(cluster, name, k) is target)

    async def scenario() -> None:
        client = redis.asyncio.RedisCluster(
            host=cluster.host, port=cluster.port, socket_timeout=0.3
        )
        store = adm.stores.Redis(client=client, timeout=0.1)
        per_user = adm.KeyedTokenBucket(rate=1, per=3600, burst=9, name=name, store=store)
        try:
            await per_user.acquire(away)  # registered; no connection of the store's to target
            assert f"{target.host}:{target.port}" not in store._nodes
            target.pause()
            try:
                with pytest.raises(adm.StoreUnavailable, match="no answer"):
                    await per_user.acquire(here, timeout=0)
                await asyncio.sleep(1.0)  # noqa: ADM401 - the caller's own work, past 0.3 s
            finally:
                target.resume()
            await wait_until(lambda: not _background_here(), "the call left", within=BOUND)
        finally:
            await store.aclose()
            await client.aclose()

    run(scenario())
