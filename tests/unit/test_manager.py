"""ConcurrencyManager: named limits in use, reloads under load, and the file watcher."""

from __future__ import annotations

import gc
import os
import random
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import admission as adm
from admission.durations import Rate
from admission.manager import ConcurrencyManager

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import ExceptionGroup

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_admission_variables")]


EXAMPLE = {
    "limits": {
        "openai": {
            "policy": "openai",
            "concurrency": 20,
            "rate": "60/min",
            "tokens": "90000/min",
            "timeout": "60s",
        },
        "rag": {"policy": "database", "concurrency": 10},
    }
}


def manager(limits: dict[str, Any], **kwargs: Any) -> ConcurrencyManager:
    return ConcurrencyManager.from_dict({"limits": limits}, **kwargs)


async def until(condition: Any) -> None:
    """Yields to the loop until ``condition()`` holds (never sleeps on real time)."""
    for _ in range(10_000):
        if condition():
            return
        await anyio.lowlevel.checkpoint()
    raise AssertionError("condition never held")


# -- using limits --------------------------------------------------------------------------


async def test_limit_takes_permit_request_and_tokens() -> None:
    clock = adm.testing.ManualClock()
    m = ConcurrencyManager.from_dict(EXAMPLE, clock=clock)
    lease = m.limit("openai", tokens=850)
    assert repr(lease) == "<Lease 'openai' timeout=60.0>"
    async with lease as bound:
        # Issue 15: the tokens are a reservation, settled at the real count.
        assert isinstance(bound, adm.Reservation)
        assert bound.reserved == (1, 850)
        assert m.semaphore("openai").in_use == 1
        bound.settle(600)
    assert m.semaphore("openai").in_use == 0
    stats = m.stats()["openai"]
    assert stats.rate is not None
    assert stats.tokens is not None
    assert (stats.concurrency.admitted, stats.rate.admitted, stats.tokens.admitted_cost) == (
        1,
        1,
        600,
    )
    assert stats.rate.admitted_cost == 1, "settle(actual) settles the tokens only"
    with m.limit("openai", tokens=100) as reservation:
        assert reservation is not None
        reservation.settle(150)
    assert m.stats()["openai"].tokens.admitted_cost == 750  # type: ignore[union-attr]
    # Without tokens only the request rate is charged.
    async with m.limit("openai"):
        pass
    assert m.stats()["openai"].tokens.admitted == 2  # type: ignore[union-attr]
    assert m.rate("openai").stats().admitted == 3


async def test_limit_bounds_concurrency() -> None:
    m = manager({"db": {"concurrency": 3, "timeout": "none"}})
    active = peak = 0

    async def work() -> None:
        nonlocal active, peak
        async with m.limit("db"):
            active += 1
            peak = max(peak, active)
            await anyio.lowlevel.checkpoint()
            active -= 1

    async with anyio.create_task_group() as tg:
        for _ in range(30):
            tg.start_soon(work)
    assert peak == 3
    s = m.stats()["db"].concurrency
    assert (s.admitted, s.in_use, s.waiting, s.high_water) == (30, 0, 0, 3)


def test_limit_in_threads() -> None:
    m = manager({"db": {"concurrency": 2}, "api": {"rate": "1000/s", "tokens": "10000/s"}})
    active = peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal active, peak
        for _ in range(50):
            with m.limit("db"), m.limit("api", tokens=2):
                with lock:
                    active += 1
                    peak = max(peak, active)
                with lock:
                    active -= 1

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak <= 2
    stats = m.stats()
    assert stats["db"].concurrency.admitted == 300
    assert stats["api"].tokens.admitted_cost == 600  # type: ignore[union-attr]


async def test_rate_timeout_fails_at_once_and_gives_the_permit_back() -> None:
    clock = adm.testing.ManualClock()
    m = manager({"slow": {"rate": "1/min", "burst": 1, "timeout": "1s"}}, clock=clock)
    async with m.limit("slow"):
        pass
    with pytest.raises(adm.AcquireTimeout) as info:
        async with m.limit("slow"):
            pass
    assert info.value.needed == pytest.approx(60.0)
    assert m.semaphore("slow").in_use == 0
    # The same with a per-call timeout, given as a string, and from a thread.
    with pytest.raises(adm.AcquireTimeout), m.limit("slow", timeout="500ms"):
        pass
    assert m.semaphore("slow").in_use == 0
    assert m.stats()["slow"].rate.timed_out == 2  # type: ignore[union-attr]


async def test_capacity_errors_give_the_permit_back() -> None:
    m = ConcurrencyManager.from_dict(EXAMPLE)
    with pytest.raises(adm.CapacityError):
        async with m.limit("openai", tokens=100_000):
            pass
    assert m.semaphore("openai").in_use == 0
    assert m.stats()["openai"].rate.admitted == 0  # type: ignore[union-attr]  # all or nothing
    # Bad token counts: the reservation's own errors, the permit back, async or in a thread.
    for tokens, error in [(-1, ValueError), (True, TypeError), ("5", TypeError), (1.5, TypeError)]:
        with pytest.raises(error, match="cost"):
            async with m.limit("openai", tokens=tokens):  # type: ignore[arg-type]
                pass
        with pytest.raises(error, match="cost"), m.limit("openai", tokens=tokens):  # type: ignore[arg-type]
            pass
    assert m.semaphore("openai").in_use == 0
    assert m.stats()["openai"].rate.admitted == 0  # type: ignore[union-attr]


async def test_semaphore_timeout() -> None:
    m = manager({"one": {"concurrency": 1, "timeout": "20ms"}})
    async with m.limit("one"):
        with pytest.raises(adm.AcquireTimeout):
            async with m.limit("one"):
                pass
    assert m.stats()["one"].concurrency.timed_out == 1
    async with m.limit("one", timeout=None):
        pass


async def test_tokens_only_limit() -> None:
    clock = adm.testing.ManualClock()
    m = manager({"emb": {"tokens": "100/s", "concurrency": "none"}}, clock=clock)
    async with m.limit("emb", tokens=60):
        pass
    async with m.limit("emb"):  # no tokens asked: nothing charged
        pass
    assert m.tokens("emb").stats().admitted_cost == 60
    assert m.policy("emb").concurrency is None
    assert m.semaphore("emb").limit == adm.MAX_PERMITS
    assert m.stats()["emb"].utilization == 0.0


def test_unknown_names() -> None:
    m = ConcurrencyManager.from_dict(EXAMPLE)
    with pytest.raises(adm.UnknownLimit) as info:
        m.limit("opnai")
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, adm.AdmissionError)
    assert str(info.value) == "no limit named 'opnai' (did you mean 'openai'?); known: openai, rag"
    assert info.value.name == "opnai"
    with pytest.raises(adm.UnknownLimit, match=r"^the limit 'rag' has no rate limit"):
        m.rate("rag")
    with pytest.raises(adm.UnknownLimit, match=r"^the limit 'rag' has no tokens limit"):
        m.tokens("rag")
    with pytest.raises(KeyError, match="known: none"):
        ConcurrencyManager().semaphore("x")


def test_introspection() -> None:
    m = ConcurrencyManager.from_dict(EXAMPLE)
    assert m.names == ("openai", "rag") == tuple(m)
    assert "rag" in m
    assert "x" not in m
    assert m.policy("rag").timeout == 10.0
    assert m.rate("openai").name == "openai.rate"
    assert m.tokens("openai").name == "openai.tokens"
    assert m.semaphore("rag").name == "rag"
    assert m.config.limits["openai"].tokens == Rate(90000, 60.0)
    assert repr(m) == "<ConcurrencyManager openai, rag from <dict>>"
    stats = m.stats()["rag"]
    assert (stats.name, stats.policy.parent, stats.rate, stats.tokens) == (
        "rag",
        "database",
        None,
        None,
    )


def test_utilization() -> None:
    m = manager({"db": {"concurrency": 4}})
    with m.limit("db"), m.limit("db"), m.limit("db"):
        assert m.stats()["db"].utilization == 0.75


def test_from_file_and_env(tmp_path: Path) -> None:
    path = tmp_path / "admission.toml"
    path.write_text('[limits.rag]\npolicy = "database"\nconcurrency = 10\n', encoding="utf-8")
    m = ConcurrencyManager.from_file(path, env={"ADMISSION_RAG_CONCURRENCY": "3"})
    assert m.semaphore("rag").limit == 3
    m2 = ConcurrencyManager.from_env({"ADMISSION_CONFIG": str(path)})
    assert m2.semaphore("rag").limit == 10
    m3 = ConcurrencyManager({"limits": {"x": {"concurrency": 2}}})
    assert m3.semaphore("x").limit == 2


# -- reload --------------------------------------------------------------------------------


async def test_reload_while_tasks_hold_and_wait() -> None:
    """Shrink then grow under load: nothing lost, nobody beyond the limit, FIFO kept."""
    m = manager({"db": {"concurrency": 4, "timeout": "none"}})
    sem = m.semaphore("db")
    release = [anyio.Event() for _ in range(10)]
    admitted: list[int] = []
    over_limit: list[tuple[int, int, int]] = []
    active = 0

    async def worker(i: int) -> None:
        nonlocal active
        async with m.limit("db"):
            if active >= sem.limit:  # admitted although the others already filled the limit
                over_limit.append((i, active, sem.limit))
            active += 1
            admitted.append(i)
            await release[i].wait()
            active -= 1

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(worker, i)
            # Queue them one by one, so that the FIFO order is known.
            await until(lambda i=i: len(admitted) + sem.waiting == i + 1)
        assert (admitted, sem.in_use, sem.waiting) == ([0, 1, 2, 3], 4, 6)

        m.reload({"limits": {"db": {"concurrency": 2, "timeout": "none"}}})
        assert m.semaphore("db") is sem
        assert (sem.limit, sem.in_use, sem.waiting) == (2, 4, 6)  # held permits stay valid
        release[0].set()
        release[1].set()
        await until(lambda: sem.in_use == 2)
        for _ in range(10):
            await anyio.lowlevel.checkpoint()
        assert (admitted, sem.waiting) == ([0, 1, 2, 3], 6)  # 2 held of 2: nobody goes in
        release[2].set()
        await until(lambda: len(admitted) == 5)
        assert (admitted[-1], sem.in_use, sem.waiting) == (4, 2, 5)

        m.reload({"limits": {"db": {"concurrency": 5, "timeout": "none"}}})
        await until(lambda: len(admitted) == 8)
        assert (sem.in_use, sem.waiting) == (5, 2)
        # FIFO: the three longest waiters got the permits (woken together, they may *run* in
        # any order: trio shuffles the tasks it reschedules at once).
        assert sorted(admitted[5:]) == [5, 6, 7]
        for event in release:
            event.set()

    assert sorted(admitted) == list(range(10))
    assert over_limit == []
    s = m.stats()["db"].concurrency
    assert (s.admitted, s.in_use, s.waiting, s.timed_out, s.cancelled, s.high_water) == (
        10,
        0,
        0,
        0,
        0,
        5,
    )


def test_reload_from_threads_keeps_counters_exact() -> None:
    m = manager({"db": {"concurrency": 3, "timeout": "none"}})
    sem = m.semaphore("db")
    active = peak = 0
    lock = threading.Lock()
    stop = threading.Event()

    def work() -> None:
        nonlocal active, peak
        for _ in range(200):
            with m.limit("db"):
                with lock:
                    active += 1
                    peak = max(peak, active)
                with lock:
                    active -= 1

    def reloader() -> None:
        rng = random.Random(1)
        while not stop.is_set():
            m.reload({"limits": {"db": {"concurrency": rng.randint(1, 4), "timeout": "none"}}})

    threads = [threading.Thread(target=work) for _ in range(6)]
    changer = threading.Thread(target=reloader)
    changer.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    changer.join()
    assert peak <= 4  # never above the largest limit ever configured
    s = sem.stats()
    assert (s.admitted, s.in_use, s.waiting) == (1200, 0, 0)


async def test_reload_rate_change_carries_use_and_counters_over() -> None:
    clock = adm.testing.ManualClock()
    m = manager({"api": {"rate": "60/min", "concurrency": "none"}}, clock=clock)
    old = m.rate("api")
    for _ in range(30):
        async with m.limit("api"):
            pass
    # An admission taken on the old bucket (counted once it is known to go in) before the reload.
    assert old._take(1) is not None

    m.reload({"limits": {"api": {"rate": "120/min", "concurrency": "none"}}})
    new = m.rate("api")
    assert new is not old
    assert (new.rate, new.per, new.burst) == (120, 60.0, 120)
    # The new bucket starts as used as the old one was: 31 of its 120 are gone.
    assert new.peek(1).remaining == 120 - 31 - 1
    old._commit(1)  # the old waiter goes in

    async with m.limit("api"):
        pass
    rate = m.stats()["api"].rate
    assert rate is not None
    assert (rate.name, rate.admitted) == ("api.rate", 32)  # 30 + the old waiter + 1 new

    # An unchanged reload keeps the same objects.
    m.reload({"limits": {"api": {"rate": "120/min", "concurrency": "none"}}})
    assert m.rate("api") is new


async def test_reload_tokens_and_both() -> None:
    clock = adm.testing.ManualClock()
    m = ConcurrencyManager.from_dict(EXAMPLE, clock=clock)
    async with m.limit("openai", tokens=1000):
        pass
    rate_before = m.rate("openai")
    changed = {
        "limits": {
            **EXAMPLE["limits"],
            "openai": {**EXAMPLE["limits"]["openai"], "tokens": "50000/min"},
        }
    }
    m.reload(changed)
    assert m.rate("openai") is rate_before  # only the tokens bucket changed
    assert m.tokens("openai").rate == 50000
    assert m.tokens("openai").peek(0).remaining == 49000
    async with m.limit("openai", tokens=10):
        pass
    assert m.stats()["openai"].tokens.admitted_cost == 1010  # type: ignore[union-attr]


def test_a_bad_reload_changes_nothing() -> None:
    m = ConcurrencyManager.from_dict(EXAMPLE)
    before = (m.config, m.semaphore("rag"), m.rate("openai"), m.semaphore("rag").limit)
    bad = {"limits": {"rag": {"concurrency": 3}, "openai": {"rate": "fast"}}}
    with pytest.raises(adm.ConfigError, match=r"limits\.openai\.rate"):
        m.reload(bad)
    with pytest.raises(adm.ConfigError, match=r"limits\.x: .*burst"):
        m.reload({"limits": {"rag": {"concurrency": 3}, "x": {"rate": "1/d", "burst": 10**6}}})
    assert (m.config, m.semaphore("rag"), m.rate("openai"), m.semaphore("rag").limit) == before


async def test_removed_limit_opens_its_waiters_and_returns_with_its_accounting() -> None:
    m = manager({"db": {"concurrency": 1, "timeout": "none"}, "other": {}})
    sem = m.semaphore("db")
    entered = anyio.Event()
    release = anyio.Event()

    async def waiter() -> None:
        async with m.limit("db"):
            entered.set()
            await release.wait()

    async with m.limit("db"), anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await until(lambda: sem.waiting == 1)
        m.reload({"limits": {"other": {}}})
        with pytest.raises(adm.UnknownLimit, match="known: other"):
            m.limit("db")
        await entered.wait()  # no longer limited: the waiter went in
        assert sem.in_use == 2
        m.reload({"limits": {"db": {"concurrency": 1, "timeout": "20ms"}, "other": {}}})
        assert m.semaphore("db") is sem
        assert sem.limit == 1
        with pytest.raises(adm.AcquireTimeout):  # both holders still count
            async with m.limit("db"):
                pass
        release.set()
    assert (sem.in_use, sem.stats().admitted) == (0, 2)


async def test_concurrency_none_is_unbounded_but_counted() -> None:
    m = manager({"db": {"concurrency": 1, "timeout": "none"}})
    async with m.limit("db"):
        m.reload({"limits": {"db": {"concurrency": "none"}}})
        async with m.limit("db"), m.limit("db"):
            assert m.semaphore("db").in_use == 3


def test_reload_sources(tmp_path: Path) -> None:
    path = tmp_path / "admission.toml"
    path.write_text("[limits.a]\nconcurrency = 2\n", encoding="utf-8")
    m = ConcurrencyManager.from_file(path, env=False)
    path.write_text("[limits.a]\nconcurrency = 3\n", encoding="utf-8")
    assert m.reload().limits["a"].concurrency == 3  # None: the same file again
    other = tmp_path / "other.toml"
    other.write_text("[limits.a]\nconcurrency = 4\n", encoding="utf-8")
    m.reload(str(other))
    assert m.semaphore("a").limit == 4
    m.reload(adm.Config.from_dict({"limits": {"a": {"concurrency": 5}}}))
    assert m.semaphore("a").limit == 5
    with pytest.raises(adm.ConfigError, match="not read from a file"):
        m.reload()


def test_attach_follows_reloads() -> None:
    seen: list[adm.Policy | None] = []

    class Pool:
        def apply(self, policy: adm.Policy | None) -> None:
            seen.append(policy)

    m = manager({"rag": {"concurrency": 8}})
    m.attach("rag", Pool())
    m.reload({"limits": {"rag": {"concurrency": 9}}})
    m.reload({"limits": {}})
    assert [p.concurrency if p else None for p in seen] == [8, 9, None]
    with pytest.raises(adm.UnknownLimit):
        m.attach("nope", Pool())


class Recorder:
    """An attached resource that records each policy it is given; ``fail`` makes its next
    ``apply`` raise (after recording), ``then`` runs inside its next ``apply``."""

    def __init__(self) -> None:
        self.seen: list[int | None] = []
        self.fail: Exception | None = None
        self.then: Any = None

    def apply(self, policy: adm.Policy | None) -> None:
        self.seen.append(None if policy is None else policy.concurrency)
        then, self.then = self.then, None
        if then is not None:
            then()
        fail, self.fail = self.fail, None
        if fail is not None:
            raise fail


def test_a_failing_apply_neither_stops_the_reload_nor_the_other_resources() -> None:
    m = manager({"a": {"concurrency": 1}, "b": {"concurrency": 2, "rate": "10/s"}})
    first, failing, last = Recorder(), Recorder(), Recorder()
    m.attach("a", first)
    m.attach("b", failing)
    m.attach("b", last)  # attached after the failing one: still told
    old_rate = m.rate("b")
    boom = RuntimeError("pool resize failed")
    failing.fail = boom
    with pytest.raises(ExceptionGroup) as info:
        m.reload({"limits": {"a": {"concurrency": 3}, "b": {"concurrency": 4, "rate": "20/s"}}})
    assert info.value.exceptions == (boom,)  # reported, once, as raised
    assert "in force" in str(info.value)
    # Fully applied: every limit, every resource.
    assert (m.semaphore("a").limit, m.semaphore("b").limit) == (3, 4)
    assert m.rate("b") is not old_rate
    assert m.rate("b").rate == 20
    assert m.config.limits["b"].concurrency == 4
    assert (first.seen, failing.seen, last.seen) == ([1, 3], [2, 4], [2, 4])
    # The failing one is still attached and told again next time.
    m.reload({"limits": {"a": {"concurrency": 5}}})
    assert (first.seen[-1], failing.seen[-1], last.seen[-1]) == (5, None, None)


def test_an_attach_whose_first_apply_fails_attaches_nothing() -> None:
    m = manager({"a": {"concurrency": 1}})
    broken = Recorder()
    broken.fail = ValueError("no")
    with pytest.raises(ValueError, match="no"):
        m.attach("a", broken)
    m.reload({"limits": {"a": {"concurrency": 2}}})
    assert broken.seen == [1]  # not attached: never told of the reload


def _bounded(target: Any) -> None:
    """Runs ``target`` in a thread and fails if it has not returned within 10 s (a
    deadlock); the thread is a daemon, so a deadlocked one does not hang the suite."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "deadlocked: apply() was called under the manager's lock"
    assert errors == []


def test_an_apply_that_reloads_does_not_deadlock_and_ends_up_in_force() -> None:
    m = manager({"a": {"concurrency": 1}})
    resource = Recorder()
    resource.then = lambda: m.reload({"limits": {"a": {"concurrency": 7}}})
    _bounded(lambda: m.attach("a", resource))
    # The reload landed during the first apply: applied right after it, by the same thread.
    assert resource.seen == [1, 7]
    assert m.semaphore("a").limit == 7
    # The same from inside a reload's apply.
    resource.then = lambda: m.reload({"limits": {"a": {"concurrency": 9}}})
    _bounded(lambda: m.reload({"limits": {"a": {"concurrency": 8}}}))
    assert resource.seen == [1, 7, 8, 9]
    assert m.semaphore("a").limit == 9


def test_an_apply_that_waits_for_a_reload_in_another_thread_does_not_deadlock() -> None:
    m = manager({"a": {"concurrency": 1}})
    resource = Recorder()

    def reload_elsewhere() -> None:
        other = threading.Thread(
            target=m.reload, args=({"limits": {"a": {"concurrency": 6}}},), daemon=True
        )
        other.start()
        other.join(10)
        assert not other.is_alive()

    resource.then = reload_elsewhere
    _bounded(lambda: m.attach("a", resource))
    assert resource.seen == [1, 6]  # the other thread left it to this one: in force
    assert m.semaphore("a").limit == 6


# -- the file watcher ----------------------------------------------------------------------


def _rewrite(path: Path, text: str) -> None:
    """Writes ``text`` and moves the mtime on, so that coarse file-system clocks see it."""
    before = path.stat().st_mtime_ns
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


def test_watcher_picks_up_a_change_and_survives_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "admission.toml"
    path.write_text("[limits.rag]\nconcurrency = 2\n", encoding="utf-8")
    m = ConcurrencyManager.from_file(path, env=False)
    reloaded = threading.Event()
    failed = threading.Event()
    with m.watch(
        interval=0.005, on_reload=lambda c: reloaded.set(), on_error=lambda e: failed.set()
    ) as watcher:
        assert watcher.running is True
        _rewrite(path, "[limits.rag]\nconcurrency = 7\n")
        assert reloaded.wait(10)
        assert m.semaphore("rag").limit == 7
        _rewrite(path, "[limits.rag]\nconcurrency = 0\n")
        assert failed.wait(10)
        assert m.semaphore("rag").limit == 7  # the limits in force stay
        assert isinstance(watcher.last_error, adm.ConfigError)
        assert (watcher.reloads, watcher.errors) == (1, 1)
    assert "stopped" in repr(watcher)  # not running any more


def test_watcher_check_without_thread(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "admission.toml"
    path.write_text("[limits.rag]\nconcurrency = 2\n", encoding="utf-8")
    m = ConcurrencyManager.from_file(path, env={"ADMISSION_RAG_TIMEOUT": "1s"})
    watcher = adm.watcher.ConfigWatcher(m.reload, path, in_force=lambda: m.config, env=m.config.env)
    assert watcher.check() is False  # unchanged
    _rewrite(path, "[limits.rag]\nconcurrency = 5\n")
    assert watcher.check() is True
    assert (m.semaphore("rag").limit, m.policy("rag").timeout) == (5, 1.0)  # env still applies
    _rewrite(path, "[limits.rag\n")
    with caplog.at_level("WARNING", logger="admission.config"):
        assert watcher.check() is False
    assert "kept the limits in force" in caplog.text
    assert "invalid TOML" in caplog.text
    path.unlink()
    assert watcher.check() is False  # a missing file is not a change yet
    with pytest.raises(ValueError, match="interval must be a finite number of seconds > 0"):
        adm.watcher.ConfigWatcher(m.reload, path, in_force=lambda: m.config, interval=0)


def test_watcher_thread_does_not_reload_a_file_changed_again_since_it_held_still(
    tmp_path: Path,
) -> None:
    # The polling thread reloads a signature that held still for an interval; if the file
    # changed again before the reload, it is being written: wait for it to hold still.
    path = tmp_path / "admission.toml"
    path.write_text("[limits.rag]\nconcurrency = 2\n", encoding="utf-8")
    m = ConcurrencyManager.from_file(path, env=False)
    watcher = adm.watcher.ConfigWatcher(m.reload, path, in_force=lambda: m.config, env=False)
    _rewrite(path, "[limits.rag]\nconcurrency = 5\n")
    held = adm.watcher._signature(path)
    _rewrite(path, "[limits.rag]\nconcurrency = 6\n")
    assert watcher._check(held=held) is False
    assert (m.semaphore("rag").limit, watcher.reloads) == (2, 0)
    assert watcher._check(held=adm.watcher._signature(path)) is True
    assert m.semaphore("rag").limit == 6


def test_close_stops_watchers_and_a_dropped_manager_ends_its_thread(tmp_path: Path) -> None:
    path = tmp_path / "admission.toml"
    path.write_text("[limits.rag]\nconcurrency = 2\n", encoding="utf-8")
    with ConcurrencyManager.from_file(path) as m:
        w1 = m.watch(interval="5ms")
        w2 = m.watch(path, interval=0.005)
        assert [w1.running, w2.running] == [True, True]
    assert [w1.running, w2.running] == [False, False]

    m = ConcurrencyManager.from_file(path)
    w3 = m.watch(interval=0.005)
    thread = w3._thread
    assert thread is not None
    del m
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()


def test_watcher_needs_no_manager_only_the_callables_it_is_given(tmp_path: Path) -> None:
    # The watcher reloads through `reload` and reads what is in force from `in_force`; once
    # `in_force` says there is nothing left (None), its thread ends by itself.
    path = tmp_path / "admission.toml"
    path.write_text("[limits.rag]\nconcurrency = 2\n", encoding="utf-8")
    state: dict[str, adm.Config | None] = {"config": adm.Config.from_file(path, env=False)}
    reloaded: list[adm.Config] = []

    def reload(config: adm.Config) -> None:
        reloaded.append(config)
        state["config"] = config

    watcher = adm.watcher.ConfigWatcher(
        reload, path, in_force=lambda: state["config"], interval=0.005, env=False
    )
    _rewrite(path, "[limits.rag]\nconcurrency = 3\n")
    assert watcher.check() is True
    assert [c.limits["rag"].concurrency for c in reloaded] == [3]
    _rewrite(path, "")  # no limits while some are in force: refused, nothing reloaded
    assert watcher.check() is False
    assert len(reloaded) == 1
    assert "no limits" in str(watcher.last_error)
    watcher.start()
    state["config"] = None
    thread = watcher._thread
    assert thread is not None
    thread.join(10)
    assert not thread.is_alive()


def test_watcher_reports_resources_that_failed_but_counts_the_reload(tmp_path: Path) -> None:
    path = tmp_path / "admission.toml"
    path.write_text("[limits.rag]\nconcurrency = 2\n", encoding="utf-8")
    m = ConcurrencyManager.from_file(path, env=False)
    resource = Recorder()
    m.attach("rag", resource)
    resource.fail = RuntimeError("resize failed")
    reloaded: list[adm.Config] = []
    failed: list[Exception] = []
    with m.watch(interval=3600, on_reload=reloaded.append, on_error=failed.append) as watcher:
        _rewrite(path, "[limits.rag]\nconcurrency = 3\n")
        assert watcher.check() is True  # in force
    assert m.semaphore("rag").limit == 3
    assert (watcher.reloads, watcher.errors) == (1, 1)
    assert [c.limits["rag"].concurrency for c in reloaded] == [3]
    assert isinstance(watcher.last_error, ExceptionGroup)
    assert failed == [watcher.last_error]
    assert [str(e) for e in watcher.last_error.exceptions] == ["resize failed"]


def test_watch_needs_a_file() -> None:
    with pytest.raises(adm.ConfigError, match="pass the path to watch"):
        manager({}).watch()


def test_watcher_refuses_a_truncated_file_that_held_still(tmp_path: Path) -> None:
    # `render > admission.toml`: the shell truncates, the writer pauses; the empty file holds
    # still for an interval and parses, but must not remove every limit.
    path = tmp_path / "admission.toml"
    path.write_text("[limits.rag]\nconcurrency = 2\n", encoding="utf-8")
    m = ConcurrencyManager.from_file(path, env=False)
    watcher = adm.watcher.ConfigWatcher(m.reload, path, in_force=lambda: m.config, env=False)
    for empty in ("", "\n  \n", "# being rendered\n"):
        _rewrite(path, empty)
        held = adm.watcher._signature(path)
        assert watcher._check(held=held) is False
        assert isinstance(watcher.last_error, adm.ConfigError)
        assert str(path) in str(watcher.last_error)
        assert "no limits" in str(watcher.last_error)
        assert m.semaphore("rag").limit == 2  # still in force: no UnknownLimit
    assert (watcher.reloads, watcher.errors) == (0, 3)
    _rewrite(path, "[limits.rag]\nconcurrency = 3\n")  # the writer finishes
    assert watcher._check(held=adm.watcher._signature(path)) is True
    assert m.semaphore("rag").limit == 3


def test_watcher_thread_keeps_limits_while_the_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "admission.toml"
    path.write_text("[limits.rag]\nconcurrency = 1\n", encoding="utf-8")
    m = ConcurrencyManager.from_file(path, env=False)
    failed = threading.Event()
    with m.watch(interval=0.005, on_error=lambda e: failed.set()) as watcher:
        _rewrite(path, "")
        assert failed.wait(10)
        assert m.semaphore("rag").limit == 1
        assert m.semaphore("rag").try_acquire() is True
        assert m.semaphore("rag").try_acquire() is False  # nobody let in beyond the limit
        assert watcher.reloads == 0


def test_watcher_allow_empty_removes_every_limit(tmp_path: Path) -> None:
    path = tmp_path / "admission.toml"
    path.write_text("[limits.rag]\nconcurrency = 2\n", encoding="utf-8")
    m = ConcurrencyManager.from_file(path, env=False)
    watcher = adm.watcher.ConfigWatcher(
        m.reload, path, in_force=lambda: m.config, env=False, allow_empty=True
    )
    _rewrite(path, "")
    assert watcher.check() is True
    assert dict(m.config.limits) == {}
