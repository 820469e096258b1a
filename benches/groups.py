"""What each benchmark group measures, in one line, and the unit its rows are divided into.

Every ``@pytest.mark.benchmark(group=...)`` in ``benches/`` must have an entry here:
``conftest.py`` refuses to collect a benchmark whose group is missing, so the report never
shows a group that nobody has explained. The order of this table is the order of the report
and of the chart.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Group:
    #: One line: what one operation of this group is, and what the rows compare.
    what: str
    #: What the figures are per: "call", "task", "query", ...
    unit: str = "call"


GROUPS: dict[str, Group] = {
    "try_acquire admitted": Group(
        "`bucket.try_acquire()` that admits, against the clock read it needs and the peers' "
        "in-memory limiters"
    ),
    "try_acquire rejected": Group(
        "`bucket.try_acquire()` that refuses (the limit is spent), against the same peers"
    ),
    "semaphore try_acquire+release": Group(
        "take and give back one permit without waiting, against threading and asyncio "
        "semaphores and a C lock"
    ),
    "semaphore with (thread)": Group("`with semaphore: pass` in a thread, against threading's"),
    "semaphore cancel, 50,000 queued": Group(
        "withdrawing one of 50,000 queued waiters (newest or oldest first)", unit="waiter"
    ),
    "rate limiter `with` in a thread": Group(
        "`with bucket: pass` in a thread (waits if it must), against a bare `try_acquire()`"
    ),
    "all_of(rpm, tpm) uncontended": Group(
        "one request charged to two buckets at once (1 request, 850 tokens)"
    ),
    "async with, uncontended": Group(
        "`async with limiter: pass` in a task when nothing waits, against asyncio, aiolimiter, "
        "anyio"
    ),
    "1,000 tasks through a limit of 10, sleep(0) body": Group(
        "1,000 tasks contending for 10 permits, each yielding once while it holds one",
        unit="task",
    ),
    "1,000 tasks through a limit of 10, 30 s acquire timeout": Group(
        "the same 1,000 tasks, each waiting with a 30 s timeout (asyncio needs wait_for or "
        "timeout())",
        unit="task",
    ),
    "gather 10,000 trivial coroutines, 10 at once": Group(
        "bounded gather: 10,000 coroutines, at most 10 running, against a semaphore + gather "
        "and aiometer",
        unit="coroutine",
    ),
    "breaker closed path: one call (sync)": Group(
        "a call through a closed circuit breaker in a thread, against pybreaker and purgatory"
    ),
    "breaker closed path: one call (async)": Group(
        "a call through a closed circuit breaker in a task, against aiobreaker and purgatory"
    ),
    "retry success path (sync)": Group(
        "a retried call whose first attempt succeeds, in a thread, against tenacity and stamina"
    ),
    "retry success path (async)": Group(
        "a retried call whose first attempt succeeds, in a task, against tenacity and stamina"
    ),
    "keyed try_acquire, keys held, uniform": Group(
        "`try_acquire(key)` with 1,000,000 keys held (KEYED_BENCH_KEYS), cycling through all of "
        "them (every call a cache miss), against limits and throttled-py"
    ),
    "keyed try_acquire, keys held, zipf": Group(
        "`try_acquire(key)` with 1,000,000 keys held, keys drawn from a Zipf law (popular keys "
        "stay in cache), against limits and throttled-py"
    ),
    "shared try_acquire admitted": Group(
        "`try_acquire()` of a bucket in the shared-memory store (one limit for every process), "
        "against the in-process bucket, a multiprocessing.Lock bucket and limits"
    ),
    "shared try_acquire rejected": Group("the same, refused (the shared bucket is spent)"),
    "shared keyed try_acquire, keys held, uniform": Group(
        "`try_acquire(key)` of a KeyedTokenBucket in the shared-memory store holding 100,000 "
        "keys (SHARED_KEYED_BENCH_KEYS), cycling through them, against the in-process one"
    ),
    "shared keyed try_acquire, one key": Group(
        "the same, one key every call (the table's cost without the memory latency)"
    ),
    "shared with semaphore": Group(
        "`with semaphore: pass` of a semaphore in the shared-memory store (a lease per holder), "
        "against the in-process one"
    ),
    "client transport per request (async)": Group(
        "one request through admission.httpx.AsyncTransport (default preset, then the openai "
        "and anthropic presets: reserve, headers, settle), against the bare transport it wraps",
        unit="request",
    ),
    "client transport per request (sync)": Group(
        "the same through admission.httpx.Transport in a thread", unit="request"
    ),
    "reserve and settle (async)": Group(
        "`async with manager.limit(name, tokens=est) as r: r.settle(n)` (a permit, a request "
        "and the tokens) against `tpm.reserve(est)` on the token bucket alone"
    ),
    "reserve and settle (sync)": Group("the same with `with`, in a thread"),
    "metrics: TokenBucket.try_acquire admitted": Group(
        "`try_acquire()` of a named bucket with metrics on and off (what exporting costs)"
    ),
    "metrics: Semaphore try_acquire+release": Group(
        "a named semaphore's take and give back, metrics on and off"
    ),
    "metrics: await Semaphore.acquire()+release": Group(
        "a named semaphore's awaited acquisition, metrics on and off"
    ),
    "metrics: one scrape (200 primitives, 12 series)": Group(
        "rendering one Prometheus scrape of 200 named primitives", unit="scrape"
    ),
    "network-store limiter, no network": Group(
        "`await bucket.acquire(timeout=0)` of a bucket in a network store, the store in memory "
        "(the limiter's own work per decision), against the bare decision and the in-process "
        "bucket"
    ),
    "redis store decision, c=1": Group(
        "one admitted decision through the Redis store (`Redis.rate`, and a `TokenBucket` in it) "
        "from one task, against raw PING and SET through the same client, limits and "
        "throttled-py on the same local redis-server",
        unit="decision",
    ),
    "redis store decision, c=16": Group(
        "the same from 16 tasks at once (a connection each)", unit="decision"
    ),
    "postgres select 1, concurrency 50": Group(
        "`select 1` from 50 workers through the PoolManager, against a raw asyncpg pool and "
        "a connection per query (a real local PostgreSQL)",
        unit="query",
    ),
    "postgres store decision, c=1": Group(
        "one GCRA decision through `stores.Postgres` (and the TokenBucket on it) by 1 worker, "
        "against raw asyncpg `select 1`, a PL/pgSQL function, a SELECT FOR UPDATE transaction "
        "and pyrate-limiter's PostgresBucket (a real local PostgreSQL)",
        unit="decision",
    ),
    "postgres store decision, c=16": Group(
        "the same by 16 workers on one shared bucket, pools of 16 connections",
        unit="decision",
    ),
}


def describe(group: str) -> Group:
    """The entry for ``group``; `KeyError` names this module if it has none."""
    try:
        return GROUPS[group]
    except KeyError:
        raise KeyError(f"benchmark group {group!r} is not described in benches/groups.py") from None
