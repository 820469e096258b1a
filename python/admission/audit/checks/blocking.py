"""ADM201, ADM202, ADM203: calls that block the event loop from inside ``async def``.

Only calls made directly in a coroutine's body count: a nested ``def`` or ``lambda`` may run
in a thread (``run_in_executor``, ``to_thread``), and a function passed by reference is not
called here. ADM201/ADM202 report the sites ruff reports as ASYNC251 and ASYNC210/ASYNC212
(plus ``requests.request``, ``http.client`` and ``requests.Session``); ADM203 the synchronous
database drivers, their connections and cursors.
"""

from __future__ import annotations

import ast

from admission.audit.checks.context import Context
from admission.audit.names import dotted
from admission.audit.walk import Scope, Site

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
# methods of a synchronous HTTP client that do I/O (ruff's ASYNC212 list, and urlopen)
CLIENT_METHODS = frozenset(
    {*HTTP_VERBS, "request", "send", "stream", "close", "urlopen"} - {"connect", "trace"}
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
    elif resolved in SYNC_DATABASES:
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


def check_blocking_method(ctx: Context, site: Site) -> None:
    """ADM202/ADM203 at ``client.get(...)`` / ``conn.execute(...)`` inside ``async def``,
    where the receiver is a synchronous client or connection built in this file."""
    call = site.node
    assert isinstance(call, ast.Call)
    assert isinstance(call.func, ast.Attribute)
    if id(call) in ctx.facts.awaited_calls:
        # a synchronous method's result cannot be awaited: whatever the annotation says
        # (`r: redis.Redis` given an asyncio client), this receiver is asynchronous
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
    if database is not None and method not in ("cursor", "pipeline", "pubsub"):
        ctx.report(
            call,
            "ADM203",
            f"`{dotted(call.func)}` on a `{database}` connection in `async def` blocks the event "
            "loop: use its async driver or `await asyncio.to_thread(...)`",
        )
