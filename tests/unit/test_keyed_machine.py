"""Keyed limiters against a reference model (hypothesis state machines).

The model is the specification written plainly, for one shard (``shards=1``: with more, the
least recently used key is chosen within a shard, which the unit tests cover):

- each key behaves as its own unkeyed limiter (a semaphore of ``LIMIT`` permits; a GCRA
  bucket from ``reference.GcraModel``);
- every call naming a key is a use of it, in order (``in_use`` and ``peek`` are not);
- a key may be removed only at rest: no permit held and nobody waiting (semaphore), the
  bucket full again (bucket), and nothing lent out;
- a key unused for ``TTL`` and at rest expires (the machine sweeps before every step, so
  expiry is as eager as the model's);
- a new key beyond ``max_keys`` evicts the least recently used key at rest, or is refused
  (``try_acquire`` answers False; ``acquire`` raises `TooManyKeys`) when there is none. The
  limiter orders uses by the clock's reading (two uses at one reading are in no particular
  order), so every step starts 1 µs after the previous one; and a shard of at most 16 keys
  compares them all (a larger one compares a sample: rust/core/src/keyed_table.rs);
- counts add up: admitted + rejected + timed out + cancelled = attempts; keys expired +
  evicted + held = keys ever added.

Waiters are real asyncio tasks blocked in ``acquire`` on a loop the machine steps by hand.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from reference import NS, GcraModel

import admission as adm

TTL = 5  # seconds
LIMIT = 2
KEYS = st.sampled_from(["a", "b", "c", "d", "e"])


@dataclass
class KeyModel:
    held: int = 0
    waiters: list[tuple[Any, int]] = field(default_factory=list)  # (task, n), FIFO
    last_used: int = 0  # ns
    seq: int = 0  # order of last use
    bucket: GcraModel | None = None


class KeyedMachine(RuleBasedStateMachine):
    """What both machines share: the key table, its eviction rules and the counts."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = adm.testing.ManualClock()
        self.keys: dict[str, KeyModel] = {}
        self.seq = 0
        self.added = 0
        self.expired = 0
        self.evicted = 0
        self.attempts = 0
        self.admitted = 0
        self.rejected = 0
        self.cancelled = 0
        self.max_keys = 3
        self.lim: Any = None

    @property
    def now(self) -> int:
        return int(self.clock.now_ns())

    def at_rest(self, key: str) -> bool:
        raise NotImplementedError

    def fresh(self) -> KeyModel:
        return KeyModel()

    def sweep(self) -> None:
        """A step's start: 1 µs later than the last one; expiry, in the model and
        (``sweep()``) in the limiter."""
        self.clock.advance(1e-6)
        for key in sorted(self.keys, key=lambda k: self.keys[k].seq):
            m = self.keys[key]
            if self.now - m.last_used >= TTL * NS and self.at_rest(key):
                del self.keys[key]
                self.expired += 1
        self.lim.sweep()

    def use(self, key: str) -> bool:
        """Marks a use of ``key``, adding it if need be; False if there was no room."""
        if key not in self.keys:
            if len(self.keys) >= self.max_keys:
                resting = [k for k in self.keys if self.at_rest(k)]
                if not resting:
                    return False
                lru = min(resting, key=lambda k: self.keys[k].seq)
                del self.keys[lru]
                self.evicted += 1
            self.keys[key] = self.fresh()
            self.added += 1
        m = self.keys[key]
        self.seq += 1
        m.seq = self.seq
        m.last_used = self.now
        return True

    @precondition(lambda self: self.lim is not None)
    @rule(seconds=st.sampled_from([0.5, 1, 2, 5, 10]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.sweep()

    @invariant()
    def the_same_keys_are_held(self) -> None:
        if self.lim is None:
            return
        assert len(self.lim) == len(self.keys)
        stats = self.lim.stats()
        assert stats.keys == len(self.keys)
        assert (stats.expired, stats.evicted) == (self.expired, self.evicted)
        assert stats.expired + stats.evicted + stats.keys == self.added
        assert (stats.admitted, stats.rejected, stats.cancelled) == (
            self.admitted,
            self.rejected,
            self.cancelled,
        )
        # Every attempt is counted once by its outcome, or is waiting.
        outcomes = stats.admitted + stats.rejected + stats.timed_out + stats.cancelled
        assert outcomes + stats.waiting == self.attempts


class SemaphoreMachine(KeyedMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()

    def teardown(self) -> None:
        for m in self.keys.values():
            for task, _ in m.waiters:
                task.cancel()
        self.settle()
        self.loop.close()

    def settle(self) -> None:
        """Runs the loop until every task that can move has moved."""
        for _ in range(5):
            self.loop.run_until_complete(asyncio.sleep(0))

    def at_rest(self, key: str) -> bool:
        m = self.keys[key]
        return m.held == 0 and not m.waiters

    @precondition(lambda self: self.lim is None)
    @rule(max_keys=st.integers(1, 4))
    def create(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self.lim = adm.KeyedSemaphore(
            LIMIT, max_keys=max_keys, idle_ttl=TTL, shards=1, clock=self.clock
        )

    def grant_waiters(self, key: str) -> None:
        """The model's FIFO hand-over: heads that fit are granted, in order."""
        m = self.keys[key]
        while m.waiters and m.held + m.waiters[0][1] <= LIMIT:
            _, n = m.waiters.pop(0)
            m.held += n
            self.admitted += 1

    @precondition(lambda self: self.lim is not None)
    @rule(key=KEYS, n=st.integers(1, 2))
    def try_acquire(self, key: str, n: int) -> None:
        self.sweep()
        self.attempts += 1
        added = self.use(key)
        m = self.keys.get(key)
        want = added and m is not None and not m.waiters and m.held + n <= LIMIT
        assert self.lim.try_acquire(key, n) is want
        if want:
            assert m is not None
            m.held += n
            self.admitted += 1
        else:
            self.rejected += 1

    @precondition(lambda self: self.lim is not None)
    @rule(key=KEYS, n=st.integers(1, 2))
    def acquire(self, key: str, n: int) -> None:
        """An async acquisition: admitted at once, queued, or refused for want of room."""
        self.sweep()
        self.attempts += 1
        task = self.loop.create_task(self.lim.acquire(key, n))
        self.settle()
        if not self.use(key):
            assert task.done()
            with pytest.raises(adm.TooManyKeys):
                task.result()
            self.rejected += 1
            return
        m = self.keys[key]
        if not m.waiters and m.held + n <= LIMIT:
            assert task.done()
            assert task.result() is None
            m.held += n
            self.admitted += 1
        else:
            assert not task.done()
            m.waiters.append((task, n))

    @precondition(lambda self: self.lim is not None)
    @rule(key=KEYS, n=st.integers(1, 2))
    def release(self, key: str, n: int) -> None:
        self.sweep()
        m = self.keys.get(key)
        if m is None or m.held < n:
            with pytest.raises(ValueError, match=r"release|held"):
                self.lim.release(key, n)
            if m is not None:
                self.use(key)
            return
        self.lim.release(key, n)
        m.held -= n
        self.grant_waiters(key)
        self.settle()
        self.use(key)

    @precondition(lambda self: self.lim is not None and any(m.waiters for m in self.keys.values()))
    @rule(data=st.data())
    def a_waiter_is_cancelled(self, data: st.DataObject) -> None:
        self.sweep()
        waiting = sorted(k for k, m in self.keys.items() if m.waiters)
        key = data.draw(st.sampled_from(waiting))
        m = self.keys[key]
        index = data.draw(st.integers(0, len(m.waiters) - 1))
        task, _ = m.waiters.pop(index)
        task.cancel()
        self.settle()
        assert task.cancelled()
        self.cancelled += 1
        # A waiter that leaves lets the ones behind it move up.
        self.grant_waiters(key)
        self.settle()
        self.use(key)

    @invariant()
    def permits_and_waiters_match(self) -> None:
        if self.lim is None:
            return
        for key in ["a", "b", "c", "d", "e"]:
            m = self.keys.get(key)
            assert self.lim.in_use(key) == (0 if m is None else m.held), key
            assert self.lim.waiting(key) == (0 if m is None else len(m.waiters)), key
            if m is not None:
                for task, _ in m.waiters:
                    assert not task.done()


class BucketMachine(KeyedMachine):
    def at_rest(self, key: str) -> bool:
        bucket = self.keys[key].bucket
        assert bucket is not None
        return bucket.tat <= self.now

    def fresh(self) -> KeyModel:
        return KeyModel(bucket=GcraModel(1, 1.0, 3))

    @precondition(lambda self: self.lim is None)
    @rule(max_keys=st.integers(1, 4))
    def create(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self.lim = adm.KeyedTokenBucket(
            1, 1.0, 3, max_keys=max_keys, idle_ttl=TTL, shards=1, clock=self.clock
        )

    @precondition(lambda self: self.lim is not None)
    @rule(key=KEYS, cost=st.integers(1, 3))
    def try_acquire(self, key: str, cost: int) -> None:
        self.sweep()
        self.attempts += 1
        if not self.use(key):
            assert self.lim.try_acquire(key, cost) is False
            self.rejected += 1
            return
        bucket = self.keys[key].bucket
        assert bucket is not None
        want = bucket.try_acquire(self.now, cost)
        assert self.lim.try_acquire(key, cost) is want
        if want:
            self.admitted += 1
        else:
            self.rejected += 1

    @invariant()
    def decisions_match(self) -> None:
        if self.lim is None:
            return
        for key in ["a", "b", "c", "d", "e"]:
            m = self.keys.get(key)
            got = self.lim.peek(key, 1)
            if m is None:
                assert got.allowed
                assert got.remaining == 2
                continue
            assert m.bucket is not None
            want = m.bucket.peek(self.now, 1)
            assert (got.allowed, got.remaining) == (want.allowed, want.remaining)
            assert round(got.retry_after * 1e9) == want.retry_after_ns


SemaphoreMachine.TestCase.settings = settings(
    SemaphoreMachine.TestCase.settings, stateful_step_count=40, deadline=None
)
BucketMachine.TestCase.settings = settings(
    BucketMachine.TestCase.settings, stateful_step_count=40, deadline=None
)
TestKeyedSemaphoreMachine = SemaphoreMachine.TestCase
TestKeyedBucketMachine = BucketMachine.TestCase
