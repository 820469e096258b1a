"""The keyed token bucket of the shared-memory store: one limit per key for every process of
the host, exactly (real processes: spawn start method, bounded waits, kill by pid); the table
against a reference model of per-key GCRA buckets (a hypothesis state machine on a clock of
its own); its errors, stats and metrics."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from test_shared_memory_keyed_workers import BURST, CHURN_KEYS, KEYS, churn, hammer_keys, per_user

import admission as adm

SPAWN = multiprocessing.get_context("spawn")
BOUND = 60.0  # every wait of these tests ends within this many seconds


@pytest.fixture
def store() -> Iterator[adm.stores.SharedMemory]:
    store = adm.stores.SharedMemory(f"test-{uuid.uuid4().hex}", capacity=8)
    yield store
    store.unlink()


def _recv(conn: Any) -> Any:
    assert conn.poll(BOUND), f"no answer within {BOUND} s"
    return conn.recv()


def _join(p: Any) -> None:
    p.join(BOUND)
    if p.is_alive():
        os.kill(p.pid, signal.SIGKILL)
        p.join(BOUND)
        pytest.fail(f"worker {p.pid} did not finish within {BOUND} s")
    assert p.exitcode == 0, f"worker {p.pid} failed: exit code {p.exitcode}"


# -- across processes ------------------------------------------------------------------------


def _hammer(store: adm.stores.SharedMemory, workers: int, rounds: int) -> list[int]:
    pipes = [SPAWN.Pipe() for _ in range(workers)]
    procs = [SPAWN.Process(target=hammer_keys, args=(store, rounds, c)) for _, c in pipes]
    for p in procs:
        p.start()
    for conn, _ in pipes:
        assert _recv(conn) == "ready"
    for conn, _ in pipes:
        conn.send("go")
    per_key = [0] * KEYS
    for conn, _ in pipes:
        for k, n in enumerate(_recv(conn)):
            per_key[k] += n
    for p in procs:
        _join(p)
    return per_key


def test_four_processes_share_each_keys_limit_exactly(store: adm.stores.SharedMemory) -> None:
    """Four processes race for ten new keys at once (every key is claimed by several at the
    same time): each key admits exactly its burst, no more, no less, in total."""
    per_key = _hammer(store, 4, 200)
    assert per_key == [BURST] * KEYS
    limiter = per_user(store)
    assert len(limiter) == KEYS  # one slot per key
    s = limiter.stats()
    assert (s.admitted, s.rejected) == (BURST * KEYS, 4 * 200 * KEYS - BURST * KEYS)


def test_a_process_killed_mid_run_leaves_the_table_usable(
    store: adm.stores.SharedMemory,
) -> None:
    """A process SIGKILLed while it takes tokens of a thousand keys of its own: four others
    then still get exactly each of their keys' burst, one slot per key, and its keys keep
    what they used."""
    limiter = per_user(store)
    parent, child = SPAWN.Pipe()
    worker = SPAWN.Process(target=churn, args=(store, child))
    worker.start()
    assert _recv(parent) == worker.pid
    deadline = time.monotonic() + BOUND
    while limiter.stats().admitted < 3 * CHURN_KEYS:  # well into its work
        assert worker.is_alive(), "the worker died by itself"
        assert time.monotonic() < deadline, "the worker made no progress"
        time.sleep(0.001)
    os.kill(worker.pid, signal.SIGKILL)
    worker.join(BOUND)
    assert worker.exitcode == -signal.SIGKILL
    assert len(limiter) == CHURN_KEYS
    used = limiter.stats().admitted
    assert used < BURST * CHURN_KEYS
    per_key = _hammer(store, 4, 200)
    assert per_key == [BURST] * KEYS
    assert len(limiter) == CHURN_KEYS + KEYS
    assert limiter.stats().admitted == used + BURST * KEYS
    # Its keys hold what it took: a key it had emptied is still empty.
    assert sum(limiter.peek(f"churn:{k}").allowed for k in range(CHURN_KEYS)) >= 0
    assert not limiter.peek("churn:0", BURST).allowed


# -- the table against a reference model ----------------------------------------------------

T = 100_000_000  # ns per token at 10 per second
EPOCH = 10**15  # the test clock's start (ns): far from 0, like the host's


class Reference:
    """Per-key GCRA buckets (rate 10/s, burst 3) that never forget a key."""

    def __init__(self) -> None:
        self.tat: dict[str, int] = {}

    def take(self, key: str, cost: int, now: int) -> bool:
        tat = max(self.tat.get(key, 0), now) + cost * T
        if tat - now > 3 * T:
            return False
        self.tat[key] = tat
        return True

    def live(self, now: int) -> int:
        """Keys whose bucket is not full: what the table must hold."""
        return sum(1 for tat in self.tat.values() if tat > now)

    def holding(self, now: int) -> int:
        """Keys whose slot cannot go to another key yet (``tat >= now``)."""
        return sum(1 for tat in self.tat.values() if tat >= now)


@settings(max_examples=60, stateful_step_count=60, deadline=None)
class KeyedTableMachine(RuleBasedStateMachine):
    """A table of 16 slots (``max_keys=8``: two sets, so every key may use every slot) and 24
    keys: each answer is the reference's, except a new key when all 16 slots hold keys whose
    buckets are not full: then it is refused as such (`NoRoom`), never wrongly admitted."""

    def __init__(self) -> None:
        super().__init__()
        self.store = adm.stores.SharedMemory(f"model-{uuid.uuid4().hex}", capacity=1)
        self.limiter = adm.KeyedTokenBucket(
            rate=10, burst=3, name="model", store=self.store, max_keys=8
        )
        assert self.limiter.capacity == 16
        self.ref = Reference()
        self.now = EPOCH
        self.admitted = self.refused = self.no_room = 0

    def teardown(self) -> None:
        self.store.unlink()

    @rule(ns=st.integers(0, 400_000_000))
    def time_passes(self, ns: int) -> None:
        self.now += ns

    @rule(key=st.integers(0, 23), cost=st.integers(1, 3))
    def try_acquire(self, key: int, cost: int) -> None:
        name = f"k{key}"
        got = self.limiter._try_acquire_at(name, cost, self.now)
        full = self.ref.tat.get(name, 0) < self.now  # the key needs a slot (or has one)
        if got == -2:
            # Refused for want of room: only a key without a slot, when 16 others hold theirs.
            assert full
            assert self.ref.holding(self.now) >= 16
            self.no_room += 1
            return
        expected = self.ref.take(name, cost, self.now)
        assert got == int(expected)
        if expected:
            self.admitted += 1
        else:
            self.refused += 1

    @rule(key=st.integers(0, 23), cost=st.integers(1, 3))
    def peek(self, key: int, cost: int) -> None:
        name = f"k{key}"
        decision = self.limiter._peek_at(name, cost, self.now)
        tat = max(self.ref.tat.get(name, 0), self.now)
        assert decision.allowed == (tat + cost * T - self.now <= 3 * T)

    @invariant()
    def counts_match(self) -> None:
        assert self.limiter._len_at(self.now) == self.ref.live(self.now)
        c = self.limiter._counters()
        assert (c[0], c[2], c[6]) == (
            self.admitted,
            self.refused + self.no_room,
            self.no_room,
        )


TestKeyedTableMachine = KeyedTableMachine.TestCase


# -- the surface ------------------------------------------------------------------------------


def test_the_surface_is_the_in_process_keyed_buckets(store: adm.stores.SharedMemory) -> None:
    # A token a minute: nothing refills while the test runs.
    shared = adm.KeyedTokenBucket(rate=1, per=60, burst=2, name="users", store=store, max_keys=1000)
    own = adm.KeyedTokenBucket(rate=1, per=60, burst=2)
    assert isinstance(shared, adm.stores.SharedKeyedTokenBucket)
    for limiter in (shared, own):
        assert limiter.try_acquire("user:42")
        assert limiter.try_acquire(b"user:42")
        assert not limiter.try_acquire("user:42")
        assert limiter.try_acquire(7, cost=2)
        assert not limiter.try_acquire("7")
        assert not limiter.peek("user:42").allowed
        assert limiter.peek("other").allowed
        with pytest.raises(adm.CapacityError):
            limiter.try_acquire("x", cost=3)
        with pytest.raises(TypeError, match="key must be str, bytes or int"):
            limiter.try_acquire(4.2)  # type: ignore[arg-type]
        s = limiter.stats()
        assert (s.admitted, s.admitted_cost, s.rejected) == (3, 4, 3)
        assert limiter.waiting("user:42") == 0
    # Its keys are those whose bucket is not full (the in-process one also counts keys kept
    # until idle_ttl).
    assert len(shared) == shared.stats().keys == 2
    assert repr(shared).startswith("KeyedTokenBucket(rate=1.0")
    assert "shared memory" in repr(shared)


def test_waiting_for_a_key(store: adm.stores.SharedMemory) -> None:
    """A key's next token comes after 0.5 s: a shorter timeout fails at once, a wait gets it
    (threads, asyncio, ``with limiter(key)``)."""
    limiter = adm.KeyedTokenBucket(rate=2, burst=1, name="wait", store=store, max_keys=100)
    assert limiter.try_acquire("k")
    with pytest.raises(adm.AcquireTimeout):
        limiter.acquire_blocking("k", timeout=0.01)
    limiter.acquire_blocking("k", timeout=BOUND)
    asyncio.run(limiter.acquire("k", timeout=BOUND))
    with limiter("fresh"):
        pass

    async def held() -> None:
        async with limiter("fresh", 1):
            pass

    asyncio.run(held())
    s = limiter.stats()
    assert (s.admitted, s.rejected, s.timed_out, s.cancelled, s.evicted) == (5, 0, 1, 0, 0)


def test_a_full_table_refuses_new_keys_clearly(store: adm.stores.SharedMemory) -> None:
    """``max_keys=8``: 16 slots. Once they hold 16 keys whose buckets are not full, a new key
    is refused (``try_acquire`` False, ``acquire`` TooManyKeys); known keys still decide."""
    limiter = adm.KeyedTokenBucket(rate=1, per=3600, burst=1, name="small", store=store, max_keys=8)
    assert all(limiter.try_acquire(f"k{i}") for i in range(16))
    assert not limiter.try_acquire("k16")
    with pytest.raises(adm.TooManyKeys, match="max_keys=8"):
        limiter.acquire_blocking("k16", timeout=BOUND)
    with pytest.raises(adm.TooManyKeys):
        asyncio.run(limiter.acquire("k17", timeout=BOUND))
    assert not limiter.try_acquire("k3")  # known: refused by its bucket, not for room
    s = limiter.stats()
    assert (s.keys, s.admitted, s.rejected, s.refused_full, s.cancelled) == (16, 16, 4, 3, 0)


def test_mismatches_and_bad_arguments_are_clear_errors(tmp_path: Path) -> None:
    store = adm.stores.SharedMemory("conf", capacity=4, directory=str(tmp_path))
    limiter = adm.KeyedTokenBucket(rate=5, name="k", store=store, max_keys=100)
    (table,) = store._table_paths()
    assert oct(os.stat(table).st_mode & 0o777) == "0o600"
    with pytest.raises(ValueError, match=r"is KeyedTokenBucket\(rate=5, per=1, burst=5, "):
        adm.KeyedTokenBucket(rate=5, name="k", store=store, max_keys=200)
    with pytest.raises(ValueError, match="same configuration"):
        adm.TokenBucket(rate=5, name="k", store=store)
    with pytest.raises(ValueError, match="needs a name"):
        adm.KeyedTokenBucket(rate=5, store=store)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="no idle_ttl= or shards="):
        adm.KeyedTokenBucket(rate=5, name="k", store=store, idle_ttl=5)  # type: ignore[call-overload]
    # The default's own value, given explicitly, is refused as well (it is not silently kept).
    with pytest.raises(ValueError, match="no idle_ttl= or shards="):
        adm.KeyedTokenBucket(rate=5, name="k", store=store, idle_ttl=600.0)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="store's clock"):
        adm.KeyedTokenBucket(
            rate=5,
            name="k",
            store=store,
            clock=adm.testing.ManualClock(),  # type: ignore[call-overload]
        )
    with pytest.raises(TypeError):
        adm.KeyedTokenBucket(rate=5, name="k", store=store, instances=2)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="max_keys must be between 1 and"):
        adm.KeyedTokenBucket(rate=5, name="z", store=store, max_keys=0)
    with pytest.raises(TypeError, match="SharedMemory or a network store"):
        adm.KeyedTokenBucket(rate=5, name="k", store=object())  # type: ignore[call-overload]
    # A table of another layout version (a stale file from an older admission): refused.
    os.unlink(table)  # (the old mapping keeps its own file)
    Path(table).write_bytes(b"ADMKEY01" + (1).to_bytes(8, "little") + bytes(8192 - 16))
    other = adm.stores.SharedMemory("conf", capacity=4, directory=str(tmp_path))
    with pytest.raises(RuntimeError, match="layout 1, this one reads layout 2"):
        adm.KeyedTokenBucket(rate=5, name="k", store=other, max_keys=100)
    assert limiter.try_acquire("still mapped")  # the old mapping is unaffected
    assert store.unlink()
    assert not os.path.exists(table)


def test_the_store_lists_and_exports_a_keyed_bucket_once(store: adm.stores.SharedMemory) -> None:
    limiter = adm.KeyedTokenBucket(rate=10, burst=1, name="users", store=store, max_keys=50)
    for key in ("a", "b", "a"):
        limiter.try_acquire(key)
    (listed,) = store.limiters()
    assert listed.kind == "KeyedTokenBucket"
    assert listed.config == {"rate": 10.0, "per": 1.0, "burst": 1.0, "max_keys": 50.0}
    assert (listed.admitted, listed.rejected, listed.in_use, listed.refused_full) == (2, 1, 2, 0)
    remove = store.export_metrics()
    try:
        families = {f.name: f for f in adm.metrics.collect()}
    finally:
        remove()

    def samples(family: str) -> dict[str, float]:
        return {
            s.labels.get("outcome", s.labels.get("reason", "")): s.value
            for s in families[family].samples
            if isinstance(s, adm.metrics.Sample)
            and s.labels["store"] == store.name
            and s.labels["kind"] == "keyed_token_bucket"
            and s.labels["limiter"] == "users"
        }

    # One series per limiter (never per key), the host's figures.
    assert samples("admission_shared_keys") == {"": 2.0}
    assert samples("admission_shared_max_keys") == {"": 50.0}
    assert samples("admission_shared_limit") == {"": 1.0}
    assert samples("admission_shared_acquisitions") == {
        "admitted": 2.0,
        "rejected": 1.0,
        "timeout": 0.0,
        "cancelled": 0.0,
    }
    assert samples("admission_shared_keys_removed") == {"expired": 0.0, "refused_full": 0.0}
