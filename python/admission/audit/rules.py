"""The rule table: codes, names, what each rule means and what to do instead.

The codes are the contract (``# noqa: ADM101``, ``select``, SARIF rule ids); names and texts may
be reworded. One place describes each rule, and every output format reads it from here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DOCS_PATH", "DOCS_URL", "RULES", "Rule", "rule"]

# Where the rule pages live in the source tree (``docs/audit/ADM101.md``).
DOCS_PATH = "docs/audit/{code}.md"
# Their public address, for SARIF's helpUri. None until the project has a public home (see
# pyproject.toml's [project.urls]); until then SARIF carries each rule's help text instead.
DOCS_URL: str | None = None


@dataclass(frozen=True)
class Rule:
    """One rule.

    >>> rule("ADM501").name
    'get-event-loop-in-coroutine'
    """

    code: str
    name: str
    # one line: what was found
    summary: str
    # a paragraph: why it hurts in production and what to write instead
    help: str
    # "warning" or "error"
    severity: str = "warning"
    # off unless configured (ADM601 needs its targets)
    opt_in: bool = False


RULES: tuple[Rule, ...] = (
    Rule(
        "ADM000",
        "unparsable-file",
        "The file could not be parsed, so it was not checked.",
        "The file has a syntax error (or is not UTF-8 text). Nothing in it was checked; the run "
        "went on with the other files.",
        severity="error",
    ),
    Rule(
        "ADM101",
        "unbounded-fan-out",
        "Fan-out over a collection of unbounded size starts every task at once.",
        "`asyncio.gather(*coros)`, `asyncio.wait(tasks)`, `asyncio.as_completed(...)` or a task "
        "group filled in a loop start one task per item, all at once: 10,000 items are 10,000 "
        "concurrent requests, sockets and connections. Bound it: `await adm.gather(*coros, "
        "limit=10)`, `adm.TaskPool(limit=10)`, or enter a semaphore inside each task. In test "
        "files it reports only a count written large (`range(1000)`); "
        '`test-fan-out-evidence = "data"` reads them as library code.',
    ),
    Rule(
        "ADM102",
        "unbounded-spawn-in-loop",
        "A task is spawned per loop iteration with no bound on how many run at once.",
        "`create_task` / `ensure_future` / `start_soon` in a loop over data (or a `while` loop) "
        "grows the number of running tasks with the input. Acquire a semaphore before each "
        "spawn (released when the task ends), wait while `len(pending) >= N`, or use "
        "`adm.TaskPool(limit=N)`. In test files it reports only a loop over a count written "
        "large (`range(1000)`), or a `while` that takes its item from a queue or socket.",
    ),
    Rule(
        "ADM103",
        "limiter-around-fan-out",
        "The limiter is entered once around the whole fan-out, not inside each task.",
        "`async with sem: await gather(*coros)` holds one permit for the whole batch: the tasks "
        "inside still all run at once, and the semaphore bounds nothing. Enter the limiter "
        "inside each task (`async def one(x): async with sem: ...`) or use "
        "`adm.gather(*coros, limit=N)`.",
    ),
    Rule(
        "ADM201",
        "blocking-sleep-in-async",
        "`time.sleep` inside `async def` blocks the event loop.",
        "Every other task on the loop stops for the whole sleep. Use `await asyncio.sleep(...)` "
        "(or `trio.sleep` / `anyio.sleep`).",
    ),
    Rule(
        "ADM202",
        "blocking-http-in-async",
        "A synchronous HTTP call inside `async def` blocks the event loop.",
        "`requests`, `urllib`, `http.client` and `httpx.Client` wait for the network on the "
        "loop's thread: every other task stops until the response arrives. Use "
        "`httpx.AsyncClient` or `aiohttp`, or run the call with `asyncio.to_thread` / "
        "`adm.to_thread`.",
    ),
    Rule(
        "ADM203",
        "blocking-database-in-async",
        "A synchronous database driver is used inside `async def`.",
        "`psycopg2`, `pymysql`, `sqlite3` and the synchronous `redis.Redis` block the event loop "
        "for every query. Use the async driver (`asyncpg`, `psycopg.AsyncConnection`, "
        "`aiomysql`, `aiosqlite`, `redis.asyncio`) or run the query in a thread.",
    ),
    Rule(
        "ADM301",
        "connection-per-operation",
        "A connection, pool or client is created per operation.",
        "A client, session, connection or pool built inside a loop or a request handler pays a "
        "TCP and TLS handshake each time and escapes every pool limit: under load the server "
        "sees one connection per request. Create it once (module level, app start-up or "
        "lifespan) and share it; for PostgreSQL, `adm.PoolManager`.",
    ),
    Rule(
        "ADM302",
        "thread-per-call",
        "A thread is started per call and never joined.",
        "A `threading.Thread` built per call grows the number of threads with the load; a "
        "daemon thread that is never joined is also killed mid-work at exit. Use one shared "
        "pool (`ThreadPoolExecutor` built once, or `adm.to_thread(..., limiter=...)`), or join "
        "the threads you start. Outside tests it reports only where the file shows the "
        "function running again and again (a loop, a handler, a callback); "
        '`thread-evidence = "none"` reports a thread per call of any function.',
    ),
    Rule(
        "ADM303",
        "executor-per-call",
        "A `ThreadPoolExecutor` is built per call.",
        "An executor built per call (in a coroutine, a loop, a request handler, or never shut "
        "down) starts fresh threads every time and bounds nothing across calls. Build it once "
        "(module level or `__init__`) and share it, or use `adm.to_thread`.",
    ),
    Rule(
        "ADM401",
        "retry-without-jitter",
        "Retries wait without randomness, so clients retry in lock-step.",
        "After an outage every client that failed at the same moment retries at the same "
        "moments again (a thundering herd). Add jitter: `adm.Retry(jitter='full')`, tenacity's "
        "`wait_random_exponential`, backoff's default `full_jitter`, redis-py's "
        "`ExponentialWithJitterBackoff`.",
    ),
    Rule(
        "ADM402",
        "retry-forever",
        "A `while True` retry loop has neither an attempt limit nor a deadline.",
        "A dependency that is down keeps every caller retrying forever, and the retries add "
        "load to the very thing that is failing. Stop after N attempts or a deadline: "
        "`adm.Retry(attempts=5, deadline='30s')`.",
    ),
    Rule(
        "ADM501",
        "get-event-loop-in-coroutine",
        "`asyncio.get_event_loop()` inside a coroutine: use `asyncio.get_running_loop()`.",
        "Inside a coroutine the running loop is what is meant; `get_running_loop()` says so and "
        "never creates or looks up another loop.",
    ),
    Rule(
        "ADM502",
        "get-event-loop-outside-coroutine",
        "`asyncio.get_event_loop()` outside a coroutine raises RuntimeError since Python 3.14.",
        "With no running loop, `get_event_loop()` no longer creates one (RuntimeError since "
        "Python 3.14, a DeprecationWarning before). Run coroutines with `asyncio.run(main())`, "
        "or create a loop explicitly with `asyncio.new_event_loop()`.",
    ),
    Rule(
        "ADM601",
        "unguarded-call",
        "A configured call is made outside a breaker or limiter.",
        "The call is one of the `guarded-calls` in `[tool.admission.audit]` (an LLM client's "
        "`create`, a payment API, ...) but it is not inside an `async with` of a circuit "
        "breaker or limiter, nor in a function decorated with one: this call site bypasses the "
        "protection the others have.",
        opt_in=True,
    ),
)

_BY_CODE = {r.code: r for r in RULES}


def rule(code: str) -> Rule:
    """The rule with this code (KeyError if there is none)."""
    return _BY_CODE[code]
