"""ADM201, ADM202, ADM203: calls that block the event loop from inside ``async def``.

Only calls made directly in a coroutine's body count: a nested ``def`` or ``lambda`` may run
in a thread (``run_in_executor``, ``to_thread``), and a function passed by reference is not
called here. ADM201/ADM202 report the sites ruff reports as ASYNC251 and ASYNC210/ASYNC212
(plus ``requests.request``, ``http.client`` and ``requests.Session``); ADM203 the synchronous
database drivers, their connections and cursors. A call written after a ``return`` (or
``raise``, ``break``, ``continue``) of its own block never runs: the walk leaves it out
(`admission.audit.walk`).
"""

from __future__ import annotations

import ast
import weakref

from admission.audit.checks.context import Context
from admission.audit.names import dotted
from admission.audit.walk import FileFacts, Scope, Site

__all__ = [
    "BLOCKING_HTTP",
    "CLIENT_METHODS",
    "HTTP_VERBS",
    "SYNC_DATABASES",
    "check_blocking_call",
    "check_blocking_method",
]

HTTP_VERBS = frozenset(
    {"get", "post", "put", "patch", "delete", "head", "options", "connect", "trace"}
)
BLOCKING_HTTP = frozenset(
    {
        "urllib.request.urlopen",
        "urllib3.request",
        "http.client.HTTPConnection",
        "http.client.HTTPSConnection",
        "requests.request",
        "httpx.request",
        "httpx.stream",
        *(f"requests.{verb}" for verb in HTTP_VERBS),
        *(f"httpx.{verb}" for verb in HTTP_VERBS),
    }
)
SYNC_HTTP_CLIENTS = frozenset(
    {
        "httpx.Client",
        "requests.Session",
        "requests.session",
        "requests.sessions.Session",
        "urllib3.PoolManager",
        "urllib3.HTTPConnectionPool",
        "urllib3.HTTPSConnectionPool",
    }
)
# methods of a synchronous HTTP client that wait on the network (ruff's ASYNC212 list and
# urlopen, without its `close`: closing a pool drops its sockets and sends nothing to wait for)
CLIENT_METHODS = frozenset(
    {*HTTP_VERBS, "request", "send", "stream", "urlopen"} - {"connect", "trace"}
)
SYNC_DATABASES = frozenset(
    {
        "psycopg2.connect",
        "psycopg2.pool.SimpleConnectionPool",
        "psycopg2.pool.ThreadedConnectionPool",
        "psycopg.connect",
        "psycopg.Connection.connect",
        "pymysql.connect",
        "pymysql.Connect",
        "pymysql.connections.Connection",
        "MySQLdb.connect",
        "mysql.connector.connect",
        "sqlite3.connect",
        "redis.Redis",
        "redis.StrictRedis",
        "redis.from_url",
        "redis.Redis.from_url",
        "redis.StrictRedis.from_url",
        "redis.client.Redis",
        "redis.client.StrictRedis",
        "redis.RedisCluster",
        "redis.cluster.RedisCluster",
        "pymongo.MongoClient",
        "pymongo.mongo_client.MongoClient",
        "cx_Oracle.connect",
        "oracledb.connect",
        "pyodbc.connect",
        "pymssql.connect",
    }
)
# methods of a connection that hand out another blocking object (cursor, pipeline, ...)
_DERIVED = frozenset({"cursor", "pipeline", "getconn", "connect", "execute", "pubsub"})
# drivers whose `connect(..., async_=True)` opens a non-blocking connection (polled by the
# caller: aiopg's, psycopg2's own asynchronous mode)
_ASYNC_MODE_DRIVERS = frozenset({"psycopg2.connect"})
_ASYNC_MODE_KEYS = ("async_", "async")
# psycopg2 connection methods that read libpq's state or build an object, whatever the mode:
# no round trip to the server
_LOCAL_STATE = frozenset(
    {
        "xid",
        "get_backend_pid",
        "get_parameter_status",
        "get_transaction_status",
        "get_dsn_parameters",
        "get_native_connection",
        "fileno",
        "isexecuting",
    }
)


def _async_mode(ctx: Context, call: ast.Call) -> bool:
    """A ``psycopg2.connect`` that opens the connection in asynchronous mode: ``async_=``
    (or ``async=``) given and not ``False``, also through ``**options`` when the file sets
    ``options["async_"]``: its calls return at once and the caller polls the socket."""
    for keyword in call.keywords:
        if keyword.arg in _ASYNC_MODE_KEYS:
            return not (isinstance(keyword.value, ast.Constant) and not keyword.value.value)
    spread = {k.value.id for k in call.keywords if k.arg is None and isinstance(k.value, ast.Name)}
    if not spread:
        return False
    for node in ast.walk(ctx.facts.tree):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            if (
                isinstance(target, ast.Subscript)
                and isinstance(target.value, ast.Name)
                and target.value.id in spread
                and isinstance(target.slice, ast.Constant)
                and target.slice.value in _ASYNC_MODE_KEYS
            ):
                value = node.value
                return not (isinstance(value, ast.Constant) and not value.value)
    return False


def _origin(
    ctx: Context, receiver: ast.expr, scope: Scope, kinds: frozenset[str], depth: int = 0
) -> str | None:
    """The constructor a receiver comes from, if it is one of ``kinds`` (through one
    ``.cursor()``-like step per level: ``cur = conn.cursor()``)."""
    if depth > 3:
        return None
    if isinstance(receiver, ast.Call):
        resolved = ctx.resolve(receiver.func)
        if resolved in kinds:
            if resolved in _ASYNC_MODE_DRIVERS and _async_mode(ctx, receiver):
                return None  # a non-blocking connection, and what it hands out
            return resolved
        if isinstance(receiver.func, ast.Attribute) and receiver.func.attr in _DERIVED:
            return _origin(ctx, receiver.func.value, scope, kinds, depth + 1)
        return None
    annotation = ctx.annotation(receiver, scope)
    if annotation in kinds:
        return annotation
    for value in ctx.bindings(receiver, scope):
        found = _origin(ctx, value, scope, kinds, depth + 1)
        if found is not None:
            return found
    return None


def check_blocking_call(ctx: Context, site: Site) -> None:
    """ADM201/ADM202/ADM203 at a call by qualified name inside ``async def``."""
    if not ctx.in_async(site):
        return
    call = site.node
    assert isinstance(call, ast.Call)
    resolved = ctx.resolve(call.func)
    if resolved == "time.sleep" and id(call) in ctx.facts.awaited_calls:
        # `await sleep(...)`: `time.sleep` returns None, which cannot be awaited, so the name
        # is `asyncio.sleep` where this line runs (imported under a flag: `if REST: from time
        # import sleep` / `else: from asyncio import sleep`)
        return
    if resolved == "time.sleep":
        ctx.report(
            call,
            "ADM201",
            "`time.sleep` in `async def` blocks the event loop: use `await asyncio.sleep(...)`",
        )
    elif resolved in BLOCKING_HTTP:
        ctx.report(
            call,
            "ADM202",
            f"`{resolved}` in `async def` blocks the event loop until the response arrives: "
            "use `httpx.AsyncClient` or `aiohttp`, or `await asyncio.to_thread(...)`",
        )
    elif resolved in SYNC_DATABASES and not (
        resolved in _ASYNC_MODE_DRIVERS and _async_mode(ctx, call)
    ):
        ctx.report(
            call,
            "ADM203",
            f"`{resolved}` in `async def` is a synchronous driver: every query blocks the "
            "event loop; use its async driver or `await asyncio.to_thread(...)`",
        )
    elif (
        resolved is None
        and isinstance(call.func, ast.Attribute)
        and isinstance(call.func.value, ast.Call)
    ):
        # `requests.Session().get(...)`: a method on a client built on the spot
        check_blocking_method(ctx, site)


# per file: the calls whose result is the receiver of an awaited method call
_AWAITED_RECEIVERS: weakref.WeakKeyDictionary[FileFacts, set[int]] = weakref.WeakKeyDictionary()


def _awaited_receivers(facts: FileFacts) -> set[int]:
    """Ids of the calls in ``await a.b(x).c(y).d()``'s chain before the awaited one
    (``a.b(x)``, ``a.b(x).c(y)``)."""
    found = _AWAITED_RECEIVERS.get(facts)
    if found is None:
        found = set()
        for node in ast.walk(facts.tree):
            if isinstance(node, ast.Await) and isinstance(node.value, ast.Call):
                func = node.value.func
                while isinstance(func, ast.Attribute) and isinstance(func.value, ast.Call):
                    found.add(id(func.value))
                    func = func.value.func
        _AWAITED_RECEIVERS[facts] = found
    return found


def check_blocking_method(ctx: Context, site: Site) -> None:
    """ADM202/ADM203 at ``client.get(...)`` / ``conn.execute(...)`` inside ``async def``,
    where the receiver is a synchronous client or connection built in this file."""
    call = site.node
    assert isinstance(call, ast.Call)
    assert isinstance(call.func, ast.Attribute)
    if id(call) in ctx.facts.awaited_calls or id(call) in _awaited_receivers(ctx.facts):
        # a synchronous method's result cannot be awaited, nor has it methods that can
        # (`await conn.ft(name).info()`): whatever the annotation says (`r: redis.Redis`
        # given an asyncio client), this receiver is asynchronous
        return
    receiver = call.func.value
    method = call.func.attr
    if method in CLIENT_METHODS:
        client = _origin(ctx, receiver, site.scope, SYNC_HTTP_CLIENTS)
        if client is not None:
            ctx.report(
                call,
                "ADM202",
                f"`{dotted(call.func)}` on a `{client}` in `async def` blocks the event loop: "
                "use `httpx.AsyncClient` (or `await asyncio.to_thread(...)`)",
            )
            return
    database = _origin(ctx, receiver, site.scope, SYNC_DATABASES)
    if database is not None and database.startswith("psycopg2.") and method in _LOCAL_STATE:
        return
    if database is not None and method not in ("cursor", "pipeline", "pubsub"):
        ctx.report(
            call,
            "ADM203",
            f"`{dotted(call.func)}` on a `{database}` connection in `async def` blocks the event "
            "loop: use its async driver or `await asyncio.to_thread(...)`",
        )
