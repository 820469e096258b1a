"""The Redis store: limiters shared by every host that reaches one Redis (or Valkey) server.

`Redis` implements `admission.stores.NetworkStore` on redis-py's asyncio client: each method
is **one** call of a Lua script (``EVALSHA``; on exactly a ``NOSCRIPT`` error, after a
``SCRIPT FLUSH``, a restart or a failover, the script is sent again with ``EVAL``, which
loads and runs it in one command; nothing else is retried). Every script reads the server's
clock (``TIME``), never the client's, and touches keys of one hash slot only, so it runs on
Redis Cluster: through a ``RedisCluster`` client, whose slot map says which node serves a
call's slot; the store sends the call on connections of its own to that node (as with a
URL, below), and through the client where the node ran nothing (it could not be reached, or
answered ``MOVED``, ``ASK`` or ``TRYAGAIN``): the client follows the redirection, retries
and refreshes its map. A node answering ``CLUSTERDOWN`` fails the call at once
(`admission.errors.StoreUnavailable`, which its node's breaker counts). The limiters keep a
breaker per node (`Redis.server_of`); the connections to a node that serves no slot any
more once the client's map is refreshed are closed, and its breaker dropped.
A client of one node (a URL, a plain ``Redis``) of a cluster of several nodes raises
`admission.errors.ConfigError` for a key another node serves (``MOVED``, ``ASK``): a
misconfiguration, not an outage that ``on_store_error`` would answer.

What lives in Redis, under ``prefix`` (``admission`` by default); the part in braces is the
hash tag, the only part Redis Cluster hashes:

- ``<prefix>:{b:<name>}``: a `TokenBucket`'s TAT (µs, a decimal string), with a TTL of the
  time until the bucket is full again (a full bucket has no key);
- ``<prefix>:{k:<len(name)>:<name>:<key>}``: a keyed bucket's TAT for one key; the key is
  inside the hash tag, so a keyed limiter's keys spread over a cluster's slots;
- ``<prefix>:{c:<name>}``: a hash of the configurations `register` recorded for ``name``,
  one field per kind (``TokenBucket``, ``KeyedTokenBucket``, ``Semaphore``), the value a
  canonical JSON object; it never expires;
- a semaphore's keys, ``<prefix>:{s:<name>}:`` followed by one letter:

  - ``h``: the holders, a sorted set scored by lease expiry (µs on the server's clock); a
    lease is valid while its expiry is after now;
  - ``f``: a hash holder -> the fencing token its grant carried (asking again returns it);
  - ``q``: the queue, a sorted set scored by arrival (the semaphore's sequence, below);
  - ``e``: the queue entries' expiries, a sorted set scored like ``h``: a waiter that stops
    asking drops out ``lease_us`` after it last asked;
  - ``n``: the semaphore's sequence, the last number handed out as a fencing token or a
    place in the queue. Each new number is ``max(last + 1, now in µs)``: strictly
    increasing while the key lives, and still increasing if the key is ever lost (an
    evicting ``maxmemory-policy``, a restart without persistence, a failover to a replica
    that missed the last write), as long as the server's clock does not step back. It has
    no TTL; the other four expire (``PEXPIRE``) once every member in them has expired.

  The semaphore is FIFO: a holder is granted a lease only if the free leases outnumber the
  live waiters queued before it (``ahead < limit - in_use``: each of them still finds one),
  as in `admission.stores.MemoryStore`; a caller that is not in the queue has every queued
  waiter ahead of it, so a newcomer never takes a lease a live waiter is owed. Expired
  leases and queue entries are dropped by every `semaphore_acquire`. A queued holder asking
  without ``queue`` keeps its entry as it is (not renewed) and is told ``ahead == 0``.

Run the server with ``maxmemory-policy noeviction`` (Redis's default) or with no
``maxmemory``: an evicting policy may drop a bucket's TAT or a semaphore's holders, and the
limiters then admit more than their limits (fencing tokens stay increasing, see ``n``).

The client is redis-py's asyncio client, so the store runs on asyncio (and uvloop), not on
trio. With a client made from ``url`` (and to a given ``RedisCluster``'s nodes, made with
the client's settings for each node), the store uses redis-py's connections directly
(`admission.stores._connections`: its own idle list, the command packed once, no pool lock
nor health check per call) and reads their replies itself (`admission.stores._resp`);
the rate scripts answer in one status line of numbers, which a client reads and converts
in a fraction of what an array of as many integers costs (the server's cost is the same):
together, half the client instructions per rate decision of the store's call before
(benches/RESULTS.md, store17h). It
retries nothing and has no timeouts of redis-py's (its
timeouts cancel the task that began a wait, which need not be the caller's any more: see
below); a method called directly ends at ``timeout`` (one timer around the whole call). The
limiters bound every call at ``timeout`` themselves (no timer of the store's then, see
`admission.stores.network.caller_bounds`), and let a call that outlives it finish in a task
of its own (for at most `admission.stores.remote.LATE_REPLY_WITHIN` seconds more) so that
what it granted is given back. A client you pass should have no ``socket_timeout`` (nor
``socket_connect_timeout``, nor a blocking pool's ``timeout``) for the same reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, final

from admission._extras import require
from admission.errors import ConfigError, StoreUnavailable
from admission.pools.dsn import redact_dsn, scrub
from admission.stores._cluster_url import ClusterURL, is_cluster_url, parse_cluster_url
from admission.stores._connections import Connections
from admission.stores._resp import ProtocolError, read_reply
from admission.stores.network import (
    QUEUE_ENTRY_US,
    NetworkStore,
    RateReply,
    SemaphoreReply,
    caller_bounds,
    check_batch,
    check_bucket,
    check_lease,
    check_rate,
    check_requests,
)

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["Redis"]

DEFAULT_URL: Final = "redis://127.0.0.1:6379/0"
#: Connections of a client made from a URL (``?max_connections=N`` in the URL overrides it).
DEFAULT_MAX_CONNECTIONS: Final = 100

# The server's clock in µs, and the one way the scripts write a number: Lua's tostring()
# would write a µs timestamp as "1.7e+15", losing its last digits.
_PRELUDE = """
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local function int(x) return string.format('%d', x) end
local function ms(us) return int(math.ceil(us / 1000)) end
"""

# Removes ``members`` from ``key`` with ``cmd`` in chunks (unpack() of thousands of values
# would overflow Lua's stack).
_REMOVE = """
local function remove(cmd, key, members)
  for i = 1, #members, 1000 do
    redis.call(cmd, key, unpack(members, i, math.min(i + 999, #members)))
  end
end
"""

# The GCRA of admission.stores.network. KEYS: the TAT. ARGV: interval, burst, cost, max_wait.
# Returns "admitted wait tat now" as a status reply (`_numbers`).
_RATE = """
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new = tat + ARGV[3] * interval
local wait = new - ARGV[2] * interval - now
local max_wait = tonumber(ARGV[4])
if wait > 0 and max_wait >= 0 and wait > max_wait then
  return {ok = string.format('0 %d %d %d', wait, tat, now)}
end
if wait < 0 then wait = 0 end
redis.call('SET', KEYS[1], int(new), 'PX', ms(new - now))
return {ok = string.format('1 %d %d %d', wait, new, now)}
"""

# The GCRA for several requests, one after the other on one reading of the clock; one SET
# at the end (none if nothing was admitted). KEYS: the TAT. ARGV: interval, burst, then a
# cost and a max_wait per request. Returns now, then admitted, wait, tat per request, as a
# status reply of numbers (`_numbers`).
_RATE_MANY = """
local interval = tonumber(ARGV[1])
local room = tonumber(ARGV[2]) * interval
local stored = tonumber(redis.call('GET', KEYS[1]) or now)
local tat = stored
if tat < now then tat = now end
local last = nil
local out = {int(now)}
for i = 3, #ARGV, 2 do
  local new = tat + ARGV[i] * interval
  local wait = new - room - now
  local max_wait = tonumber(ARGV[i + 1])
  if wait > 0 and max_wait >= 0 and wait > max_wait then
    out[#out + 1] = string.format('0 %d %d', wait, tat)
  else
    if wait < 0 then wait = 0 end
    tat, last = new, new
    out[#out + 1] = string.format('1 %d %d', wait, new)
  end
end
if last then redis.call('SET', KEYS[1], int(last), 'PX', ms(last - now)) end
return {ok = table.concat(out, ' ')}
"""

# The GCRA for requests on several buckets (a limiter's keys): each bucket's in their order,
# on one reading of the clock; one SET per bucket charged at the end. KEYS: the TATs, each
# once. ARGV: interval, burst, then per request the index of its key in KEYS, its cost and
# its max_wait. Returns now, then admitted, wait, tat per request (as _RATE_MANY).
_RATE_BATCH = """
local interval = tonumber(ARGV[1])
local room = tonumber(ARGV[2]) * interval
local tats, charged = {}, {}
for j = 1, #KEYS do
  -- GET each (not MGET, which reads a key of another type as nil): WRONGTYPE, as rate_many
  local tat = tonumber(redis.call('GET', KEYS[j]) or now)
  if tat < now then tat = now end
  tats[j] = tat
end
local out = {int(now)}
for i = 3, #ARGV, 3 do
  local j = tonumber(ARGV[i])
  local tat = tats[j]
  local new = tat + ARGV[i + 1] * interval
  local wait = new - room - now
  local max_wait = tonumber(ARGV[i + 2])
  if wait > 0 and max_wait >= 0 and wait > max_wait then
    out[#out + 1] = string.format('0 %d %d', wait, tat)
  else
    if wait < 0 then wait = 0 end
    tats[j], charged[j] = new, true
    out[#out + 1] = string.format('1 %d %d', wait, new)
  end
end
for j = 1, #KEYS do
  if charged[j] then redis.call('SET', KEYS[j], int(tats[j]), 'PX', ms(tats[j] - now)) end
end
return {ok = table.concat(out, ' ')}
"""

# Compare-and-set on the TAT. KEYS: the TAT. ARGV: interval, cost, the TAT the charge left.
_GIVE_BACK = """
local stored = redis.call('GET', KEYS[1])
if not stored or tonumber(stored) ~= tonumber(ARGV[3]) then return 0 end
local back = stored - ARGV[2] * ARGV[1]
if back <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], int(back), 'PX', ms(back - now))
end
return 1
"""

# KEYS: the configurations of a name. ARGV: kind, canonical config. Nil, or the other one.
_REGISTER = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then return false end
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if stored == ARGV[2] then return false end
return stored
"""

# Keeps ``key`` alive at least ``us`` more µs (never shortens it).
_KEEP = """
local function keep(key, us)
  local ttl = redis.call('PTTL', key)
  if ttl >= 0 and ttl * 1000 >= us then return end
  redis.call('PEXPIRE', key, ms(us))
end
"""

# The next number of a semaphore's sequence (module docstring, ``n``).
_NEXT = """
local function next_number(key)
  local n = (tonumber(redis.call('GET', key)) or 0) + 1
  if n < now then n = now end
  redis.call('SET', key, int(n))
  return n
end
"""

# KEYS: h, f, q, e, n. ARGV: limit, holder, lease, queue (1/0).
_ACQUIRE = """
local h, f, q, e, n = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local limit, holder, lease = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local expiry = int(now + lease)
local gone = redis.call('ZRANGEBYSCORE', h, '-inf', int(now))
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', h, '-inf', int(now))
  remove('HDEL', f, gone)
end
gone = redis.call('ZRANGEBYSCORE', e, '-inf', int(now))
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', e, '-inf', int(now))
  remove('ZREM', q, gone)
end
local in_use = redis.call('ZCARD', h)
if redis.call('ZSCORE', h, holder) then
  redis.call('ZADD', h, expiry, holder)
  keep(h, lease)
  keep(f, lease)
  return {1, tonumber(redis.call('HGET', f, holder)), in_use, 0}
end
local rank = redis.call('ZRANK', q, holder)
local ahead = rank or redis.call('ZCARD', q)
if ahead < limit - in_use then
  local fence = next_number(n)
  redis.call('ZADD', h, expiry, holder)
  redis.call('HSET', f, holder, int(fence))
  keep(h, lease)
  keep(f, lease)
  if rank then
    redis.call('ZREM', q, holder)
    redis.call('ZREM', e, holder)
  end
  return {1, fence, in_use + 1, 0}
end
if ARGV[4] == '1' then
  if not rank then redis.call('ZADD', q, next_number(n), holder) end
  redis.call('ZADD', e, int(now + math.min(lease, QUEUE_ENTRY_US)), holder)
  keep(q, lease)
  keep(e, lease)
  return {0, 0, in_use, ahead}
end
return {0, 0, in_use, 0}
""".replace("QUEUE_ENTRY_US", str(QUEUE_ENTRY_US))

# KEYS: h, f. ARGV: lease, holders...
_RENEW = """
local h, f, lease = KEYS[1], KEYS[2], tonumber(ARGV[1])
local expiry = int(now + lease)
local renewed = {}
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', h, ARGV[i])
  if score and tonumber(score) > now then
    redis.call('ZADD', h, expiry, ARGV[i])
    renewed[i - 1] = 1
  else
    if score then
      redis.call('ZREM', h, ARGV[i])
      redis.call('HDEL', f, ARGV[i])
    end
    renewed[i - 1] = 0
  end
end
if redis.call('EXISTS', h) == 1 then
  keep(h, lease)
  keep(f, lease)
end
return renewed
"""

# KEYS: h, f, q, e. ARGV: holder.
_RELEASE = """
local h, f, q, e, holder = KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1]
local score = redis.call('ZSCORE', h, holder)
if score then
  redis.call('ZREM', h, holder)
  redis.call('HDEL', f, holder)
  if tonumber(score) > now then return 1 end
  return 0
end
score = redis.call('ZSCORE', e, holder)
if score then
  redis.call('ZREM', q, holder)
  redis.call('ZREM', e, holder)
  if tonumber(score) > now then return 1 end
end
return 0
"""

# KEYS: h, e.
_STATE = """
local after = '(' .. int(now)
return {redis.call('ZCOUNT', KEYS[1], after, '+inf'), redis.call('ZCOUNT', KEYS[2], after, '+inf')}
"""


def _arguments(items: Iterable[bytes | str | int]) -> bytes:
    """Arguments of a command in RESP, each ``$<length>\\r\\n<bytes>\\r\\n``: what redis-py's
    ``pack_command`` makes of them (for the ints, bytes and text the scripts take) in a
    fraction of its time."""
    out = []
    for item in items:
        if type(item) is int:
            data = b"%d" % item
        elif type(item) is bytes:
            data = item
        else:
            data = str(item).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def pack(*items: bytes | str | int) -> bytes:
    """A command as the bytes sent (RESP)."""
    return b"*%d\r\n%s" % (len(items), _arguments(items))


@final
class _Script:
    """One Lua script: its source and the SHA1 that ``EVALSHA`` names it by."""

    __slots__ = ("eval_head", "evalsha_head", "name", "sha", "source")

    def __init__(self, name: str, *parts: str) -> None:
        self.name = name
        self.source = "".join(parts)
        self.sha = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
        # The first two arguments of its EVALSHA and of its EVAL, packed once.
        self.evalsha_head = _arguments((b"EVALSHA", self.sha))
        self.eval_head = _arguments((b"EVAL", self.source))


RATE: Final = _Script("rate", _PRELUDE, _RATE)
RATE_MANY: Final = _Script("rate_many", _PRELUDE, _RATE_MANY)
RATE_BATCH: Final = _Script("rate_batch", _PRELUDE, _RATE_BATCH)
GIVE_BACK: Final = _Script("rate_give_back", _PRELUDE, _GIVE_BACK)
REGISTER: Final = _Script("register", _REGISTER)
ACQUIRE: Final = _Script("semaphore_acquire", _PRELUDE, _REMOVE, _KEEP, _NEXT, _ACQUIRE)
RENEW: Final = _Script("semaphore_renew", _PRELUDE, _KEEP, _RENEW)
RELEASE: Final = _Script("semaphore_release", _PRELUDE, _RELEASE)
STATE: Final = _Script("semaphore_state", _PRELUDE, _STATE)
SCRIPTS: Final = (RATE, RATE_MANY, RATE_BATCH, GIVE_BACK, REGISTER, ACQUIRE, RENEW, RELEASE, STATE)


def _usable(conn: Any) -> bool:
    """An idle connection the server has neither closed nor reset and that holds no unread
    bytes (its reader has seen none of them, its transport is open: known without a system
    call). A reset leaves the reader an error, not an end of file."""
    reader = getattr(conn, "_reader", None)
    writer = getattr(conn, "_writer", None)
    return (
        reader is not None
        and writer is not None
        and not reader.at_eof()
        and reader.exception() is None
        and not getattr(reader, "_buffer", b"")
        and not writer.transport.is_closing()
    )


def _close_now(conn: Any) -> None:
    """Closes redis-py connection ``conn`` (broken, stale, or given back after the store
    closed) at once: its transport now, not in a task running its ``disconnect`` coroutine,
    which a loop shutting down cancels before it ran if it was made just before
    (``asyncio.run`` cancels the tasks there are when it begins): the socket stayed open."""
    writer = conn._writer
    if writer is None:
        return
    conn._reader = conn._writer = None  # as redis-py's disconnect leaves it
    # A closed loop (its last call given back as it is collected) cannot close it: the
    # socket closes when collected.
    with contextlib.suppress(RuntimeError):
        writer.close()


class _Unreachable(Exception):
    """The store could not open a connection to a cluster's node (nothing was sent)."""


def _connect_to(node: Any, overrides: Mapping[str, Any]) -> Callable[[], Awaitable[Any]]:
    """Opens a connection to a RedisCluster's ``node`` with the client's settings for it,
    but for ``overrides``."""

    async def connect() -> Any:
        conn = node.connection_class(**{**node.connection_kwargs, **overrides})
        try:
            await conn.connect()
        except Exception as exc:
            raise _Unreachable(f"{node.name}: {exc}") from exc
        return conn

    return connect


def _cluster_client(url: ClusterURL) -> Any:
    """A ``RedisCluster`` client of the nodes ``url`` names, with no timeouts of redis-py's
    own (as a client made from a URL: module docstring); its retries are redis-py's."""
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in url.nodes],
        username=url.username,
        password=url.password,
        ssl=url.tls,
        socket_timeout=None,
        socket_connect_timeout=None,
    )


def _client_label(client: Any) -> str:
    """A URL naming where a given client connects, without its credentials."""
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
    if isinstance(kwargs, dict):
        if "path" in kwargs:
            return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
        if "host" in kwargs:
            return f"redis://{kwargs['host']}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
    nodes = getattr(client, "startup_nodes", None)  # a RedisCluster
    if isinstance(nodes, list) and nodes:
        node = nodes[0]
        return f"redis-cluster://{getattr(node, 'host', '?')}:{getattr(node, 'port', '?')}"
    return f"redis ({type(client).__name__})"


def _numbers(reply: bytes | str) -> list[int]:
    """The numbers of a rate script's status reply (bytes; str from a given client that
    decodes replies). One line of digits is read and split in a fraction of what an array
    of as many integers costs a client to parse."""
    return list(map(int, reply.split()))


def _replies(reply: bytes | str) -> list[RateReply]:
    """`RateReply`s from a `RATE_MANY` or `RATE_BATCH` reply: now, then admitted, wait and
    tat per request."""
    out = _numbers(reply)
    now = out[0]
    return [RateReply(out[i] == 1, out[i + 1], out[i + 2], now) for i in range(1, len(out), 3)]


def _positive(what: str, value: int) -> None:
    if not (isinstance(value, int) and value >= 1):
        raise ValueError(f"{what} must be an int >= 1, got {value!r}")


class Redis(NetworkStore):
    """Limiters on a Redis or Valkey server, shared by every process of every host using it.

    ``url`` is redis-py's (``redis://[[user]:password@]host[:port][/db]``, ``rediss://``
    for TLS, ``unix://path?db=0``): one server; or
    ``redis+cluster://[[user]:password@]host[:port][,host[:port]...]`` (``rediss+cluster://``
    for TLS; the scheme the ``limits`` library reads): a Redis Cluster, through a
    ``RedisCluster`` client the store makes of those nodes (redis-py's retries, no timeouts
    of its own; options need a client of yours) and closes in `aclose`; or pass ``client=``, a
    ``redis.asyncio.Redis`` (or ``RedisCluster``, the one way to a cluster of several nodes)
    of your own: it is used as it is (its retries, its pool) and `aclose` leaves it open; of
    a ``RedisCluster``, the store takes the slot map and each node's settings, and makes the
    calls on up to 100 connections of its own per node (`aclose` closes them), leaving the
    client the calls a node did not run (a redirection, a node it cannot reach). A
    client made from ``url`` retries nothing and holds at most 100 connections
    (``?max_connections=N`` in the URL): a call finding them all busy waits for one, within
    its ``timeout``. ``timeout`` bounds every call (seconds, default 0.1): a call that has
    not returned by then raises `admission.errors.StoreUnavailable`.
    ``prefix`` starts every key this store writes (module docstring).

    Needs the ``redis`` extra (``pip install 'admission[redis]'``: redis-py 6 or later).
    ``hiredis`` speeds up a given client's replies only: the store's own connections read
    theirs themselves. Asyncio only. Push messages on the store's own connections (redis-py
    8's maintenance notifications from Redis Cloud or Enterprise, RESP3) are not acted on:
    one that comes between calls makes its connection be replaced by a new one, opened to
    the URL's host.

    >>> import admission as adm
    >>> store = adm.stores.Redis("redis://app:s3cret@10.0.0.7:6379/0")
    >>> store.label
    'redis://app:***@10.0.0.7:6379/0'
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        client: redis.asyncio.Redis | redis.asyncio.RedisCluster | None = None,
        timeout: float = 0.1,
        prefix: str = "admission",
    ) -> None:
        require("redis", "redis", "admission.stores.Redis")
        import redis.asyncio
        import redis.exceptions
        from redis._parsers import BaseParser
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix must be a non-empty str, got {prefix!r}")
        if "{" in prefix or "}" in prefix:
            # The keys' hash tags follow it: a brace of its own would make Redis Cluster
            # hash another part of the key ("{}": all of it, so a semaphore's keys would
            # fall in different slots and its script fail with CROSSSLOT).
            raise ValueError(f"prefix must not contain braces, got {prefix!r}")
        self.timeout = float(timeout)
        self.prefix = prefix
        self._prefix = prefix.encode()
        # A cluster URL: a RedisCluster client of the store's own (closed by `aclose`).
        cluster_url = None
        if client is None and isinstance(url, str) and is_cluster_url(url):
            cluster_url = parse_cluster_url(url)
            client = _cluster_client(cluster_url)
        self._noscript: type[Exception] = redis.exceptions.NoScriptError
        self._driver_errors: tuple[type[Exception], ...] = (redis.exceptions.RedisError, OSError)
        self._in_step: type[Exception] = redis.exceptions.ResponseError
        self._cross_slot: type[Exception] = redis.exceptions.ClusterCrossSlotError
        self._slot_unknown: type[Exception] = redis.exceptions.SlotNotCoveredError
        self._connection_error: type[Exception] = redis.exceptions.ConnectionError
        # The exception redis-py raises for an error reply, by its code (NOSCRIPT, CROSSSLOT,
        # ...): the store's own reader raises the same ones (`_exchange`).
        self._error_reply: Callable[[str], Exception] = BaseParser.parse_error
        # Whether a script may touch keys of several hash slots: not on a cluster (known
        # from the client, or from the first CROSSSLOT a node answers: see `rate_batch`).
        self._cluster = isinstance(client, redis.asyncio.RedisCluster)
        self._one_slot = self._cluster
        # A node's redirection (MOVED, ASK: AskError is MovedError's base) reaching the
        # store: a client of one node of a cluster of several, a misconfiguration
        # (`_eval`). A RedisCluster client follows them itself.
        self._redirected: tuple[type[Exception], ...] = (
            () if self._one_slot else (redis.exceptions.AskError,)
        )
        # A call on a cluster's node that ran nothing, for the cluster client to make
        # instead: the node unreachable, or its answer a redirection or TRYAGAIN (a slot
        # mid-migration), which the client follows or retries (`_on_node`). Not CLUSTERDOWN:
        # the node is reachable and says the cluster cannot serve; the client would sleep
        # 0.25 s, refresh its map and try again, several times, past every caller's timeout
        # and each call's, so the store raises it at once (`StoreUnavailable`, the breaker).
        self._not_run: tuple[type[Exception], ...] = (
            _Unreachable,
            redis.exceptions.AskError,
            redis.exceptions.TryAgainError,
        )
        # A RedisCluster's nodes: the store's own connections to each, by node name.
        self._nodes: dict[str, Connections[Any]] = {}
        # The client's slot map when the store last looked for departed nodes (by identity:
        # `_drop_departed`).
        self._slot_map: object = None
        # Told of a node that left the cluster (`when_server_gone`): the limiters' breakers.
        self._server_gone: list[Callable[[str], object]] = []
        # Made with the client's settings for each node but no timeouts nor retries of
        # redis-py's own, as from a URL (below): its timeouts cancel the task that began
        # the wait, the caller's, which a call past its deadline has left by then.
        self._node_settings: dict[str, Any] = {
            "socket_timeout": None,
            "socket_connect_timeout": None,
            "retry": Retry(NoBackoff(), 0),
        }
        # Whether the calls go on those (a RedisCluster client's) until `aclose`; after it,
        # through the client, which it leaves open: none opened again that none would close.
        self._on_own_nodes = self._cluster
        if client is not None:
            self._client: Any = client
            self._direct: Connections[Any] | None = None
            self._owned = cluster_url is not None
            self._label = _client_label(client) if cluster_url is None else cluster_url.label
            self._secrets: tuple[str, ...] = ()
            if cluster_url is not None and cluster_url.password:
                self._secrets = (cluster_url.password,)
            return
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, got {type(url).__name__}")
        self._label = redact_dsn(url)
        from urllib.parse import unquote, urlsplit

        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        self._secrets = (password, unquote(password)) if password else ()
        try:
            # A call waits (within its timeout) for one of the pool's connections, rather
            # than failing as redis-py's default pool does when all are in use. No timeouts
            # of redis-py's own: it bounds a wait with asyncio.timeout, which cancels the
            # task that began the wait, and a limiter's call goes on in a task of its own
            # after its deadline: the caller's task would be cancelled later, at random.
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                url,
                max_connections=DEFAULT_MAX_CONNECTIONS,
                timeout=None,
                socket_timeout=None,
                socket_connect_timeout=None,
                retry=Retry(NoBackoff(), 0),
            )
            self._client = redis.asyncio.Redis.from_pool(pool)
            make: Callable[[], Any] = pool.make_connection

            async def connect() -> Any:
                conn = make()
                await conn.connect()
                return conn

            # The store's calls use redis-py's connections directly (module docstring).
            self._direct = Connections(connect, _close_now, _usable, pool.max_connections)
        except ValueError as exc:
            # redis-py's message may quote the URL: say what is wrong without it.
            raise ValueError(
                f"url {self._label!r} cannot be used: {scrub(str(exc), self._secrets)}"
            ) from None
        self._owned = True

    @property
    def label(self) -> str:
        """The URL without its password (``redis://user:***@host:6379/0``)."""
        return self._label

    def __repr__(self) -> str:
        return f"Redis({self._label!r}, timeout={self.timeout}, prefix={self.prefix!r})"

    # ------------------------------------------------------------------- keys

    def _bucket_key(self, name: str, key: bytes | None) -> bytes:
        if key is None:
            return b"%s:{b:%s}" % (self._prefix, name.encode())
        encoded = name.encode()
        return b"%s:{k:%d:%s:%s}" % (self._prefix, len(encoded), encoded, key)

    def _config_key(self, name: str) -> bytes:
        return b"%s:{c:%s}" % (self._prefix, name.encode())

    def _semaphore_keys(self, name: str, which: str) -> list[bytes]:
        base = b"%s:{s:%s}:" % (self._prefix, name.encode())
        return [base + letter.encode() for letter in which]

    # ---------------------------------------------------------------- calling

    async def _eval(self, script: _Script, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        """One script call within ``timeout``: EVALSHA, and on NOSCRIPT the load and again."""
        try:
            if caller_bounds.get():
                # A limiter bounds the whole call at `timeout` and lets it finish in the
                # background (a late reply is given back): a timer here would cancel it
                # just after and lose that reply.
                return await self._evalsha(script, keys, args)
            if sys.version_info >= (3, 11):
                async with asyncio.timeout(self.timeout):
                    return await self._evalsha(script, keys, args)
            else:  # pragma: no cover - 3.10 has no asyncio.timeout
                return await asyncio.wait_for(self._evalsha(script, keys, args), self.timeout)
        except (TimeoutError, asyncio.TimeoutError) as exc:  # the two differ on 3.10 only
            raise StoreUnavailable(
                self._label, f"{script.name}: no answer within {self.timeout} s"
            ) from exc
        except self._redirected as exc:
            # Not StoreUnavailable: no outage, so no fallback (an "open" limiter would admit
            # every such key) and no breaker's verdict; it would never work as it is.
            raise ConfigError(
                f"{script.name}: the key is on another node of a Redis Cluster "
                f"({type(exc).__name__}: {exc}), and this store reaches one node: use "
                "client=redis.asyncio.RedisCluster(...) (it follows the cluster's "
                "redirections)",
                source=f"store {self._label}",
            ) from exc
        except self._driver_errors as exc:
            reason = scrub(f"{type(exc).__name__}: {exc}", self._secrets)
            raise StoreUnavailable(self._label, f"{script.name}: {reason}") from exc

    async def _exchange(self, conn: Any, command: bytes) -> Any:
        """Writes ``command`` on redis-py connection ``conn`` and reads the reply from its
        stream itself (`admission.stores._resp`: a third less client CPU per raw call than
        redis-py's ``send_packed_command`` and ``read_response``)."""
        writer = conn._writer
        if writer is None or writer.transport.is_closing():
            raise self._connection_error("Connection closed before the command was written")
        # No drain: one command at a time per connection, so the transport never holds more.
        writer.write(command)
        try:
            return await read_reply(conn._reader, self._error_reply)
        except (asyncio.IncompleteReadError, ProtocolError) as exc:
            raise self._connection_error(f"Connection lost while reading the reply: {exc}") from exc

    async def _evalsha(self, script: _Script, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        direct = self._direct
        if direct is None:
            if self._on_own_nodes:
                node = self._node(keys[0])
                if node is not None:
                    return await self._on_node(node, script, keys, args)
            return await self._through_client(script, keys, args)
        return await self._on(direct, script, keys, args)

    async def _through_client(
        self, script: _Script, keys: Sequence[bytes], args: Sequence[Any]
    ) -> Any:
        """The call through the given client (its retries, its redirections)."""
        try:
            return await self._client.evalsha(script.sha, len(keys), *keys, *args)
        except self._noscript:
            return await self._client.eval(script.source, len(keys), *keys, *args)

    def _node(self, key: bytes) -> Any:
        """The primary serving ``key``'s slot as the RedisCluster client knows it (None
        before its first call: the client then finds it)."""
        try:
            return self._client.get_node_from_key(key)
        except self._slot_unknown:
            return None

    async def _on_node(
        self, node: Any, script: _Script, keys: Sequence[bytes], args: Sequence[Any]
    ) -> Any:
        """The call on the store's own connections to a RedisCluster's ``node`` (as with a
        URL: a third less client CPU than the client's own call). Where the node ran
        nothing (it could not be reached, or it answered a redirection or TRYAGAIN), the
        call goes through the client, which follows the redirection (or retries) and
        refreshes its slot map; a call that may have run is never sent again."""
        if self._client.nodes_manager.slots_cache is not self._slot_map:
            self._drop_departed()  # the client refreshed its map (its own call, or ours)
        connections = self._nodes.get(node.name)
        if connections is None:
            connections = self._nodes[node.name] = Connections(
                _connect_to(node, self._node_settings),
                _close_now,
                _usable,
                DEFAULT_MAX_CONNECTIONS,
            )
        try:
            return await self._on(connections, script, keys, args)
        except self._not_run:
            try:
                return await self._through_client(script, keys, args)
            finally:
                if self._client.nodes_manager.slots_cache is not self._slot_map:
                    self._drop_departed()  # refreshed by that call

    def _drop_departed(self) -> None:
        """Closes the store's connections to the nodes that serve no slot any more as the
        client's map says (gone from the cluster, or a primary turned replica) and drops
        their breakers (`when_server_gone`): kept, they would stay open until `aclose`.
        Called once per refresh of the map (a new ``slots_cache``: redis-py replaces it
        whole on each refresh, and follows a redirection in place)."""
        self._slot_map = self._client.nodes_manager.slots_cache
        primaries = {node.name for node in self._client.get_primaries()}
        for name in [name for name in self._nodes if name not in primaries]:
            gone = self._nodes.pop(name)
            gone.close()  # its idle connections now, the others as their calls give them back
            for forget in self._server_gone:
                forget(name)

    def when_server_gone(self, forget: Callable[[str], object]) -> None:
        """Has ``forget(node name)`` called when a node leaves the cluster's map (with a
        ``RedisCluster`` client; see `NetworkStore.when_server_gone`)."""
        self._server_gone.append(forget)

    async def _on(
        self,
        direct: Connections[Any],
        script: _Script,
        keys: Sequence[bytes],
        args: Sequence[Any],
    ) -> Any:
        """The call on a connection of the store's own; an error reply raises redis-py's
        exception for it and leaves the connection in step."""
        exchange = self._exchange
        count = 3 + len(keys) + len(args)
        arguments = _arguments((len(keys), *keys, *args))
        command = b"*%d\r\n%s%s" % (count, script.evalsha_head, arguments)
        try:
            return await direct.call(lambda conn: exchange(conn, command), self._in_step)
        except self._noscript:
            # The server lost its scripts (SCRIPT FLUSH, a restart, a failover), and so did
            # not run this one: EVAL sends it, runs it and caches it for the next EVALSHA in
            # one command (a SCRIPT LOAD then EVALSHA could lose it to a flush in between).
            command = b"*%d\r\n%s%s" % (count, script.eval_head, arguments)
            return await direct.call(lambda conn: exchange(conn, command), self._in_step)

    # ---------------------------------------------------------- NetworkStore

    async def register(self, kind: str, name: str, config: Mapping[str, float]) -> None:
        """Records ``name``'s configuration for ``kind`` at first use (see `NetworkStore`)."""
        if not kind.isidentifier():
            raise ValueError(f"kind must be an identifier, got {kind!r}")
        wanted = {field: float(value) for field, value in config.items()}
        canonical = json.dumps(wanted, sort_keys=True, separators=(",", ":"))
        stored = await self._eval(REGISTER, (self._config_key(name),), (kind, canonical))
        if stored is not None:
            other = stored.decode() if isinstance(stored, bytes) else str(stored)
            raise ValueError(
                f"{kind} {name!r} is configured as {other} in store {self._label}, "
                f"not as {canonical}: use another name, or the same configuration"
            )

    async def rate(
        self,
        name: str,
        key: bytes | None,
        interval_us: int,
        burst: int,
        cost: int,
        max_wait_us: int,
    ) -> RateReply:
        """One GCRA decision on the server's clock (see `NetworkStore.rate`)."""
        max_wait_us = check_rate(interval_us, burst, cost, max_wait_us)
        admitted, wait_us, tat_us, now_us = _numbers(
            await self._eval(
                RATE, (self._bucket_key(name, key),), (interval_us, burst, cost, max_wait_us)
            )
        )
        return RateReply(admitted == 1, wait_us, tat_us, now_us)

    async def rate_many(
        self,
        name: str,
        key: bytes | None,
        interval_us: int,
        burst: int,
        requests: Sequence[tuple[int, int]],
    ) -> list[RateReply]:
        """Several GCRA decisions on one bucket in one script call (`NetworkStore.rate_many`)."""
        requests = check_requests(requests, interval_us, burst)
        args: list[int] = [interval_us, burst]
        for cost, max_wait_us in requests:
            args += (cost, max_wait_us)
        return _replies(await self._eval(RATE_MANY, (self._bucket_key(name, key),), args))

    @property
    def spread_over_servers(self) -> bool:
        """True with a ``RedisCluster`` client: the limiters keep a breaker per node."""
        return self._cluster

    def server_of(self, kind: str, name: str, key: bytes | None) -> str | None:
        """The node (``host:port``) serving the slot of that state, as the ``RedisCluster``
        client knows it (None before its first call, or for a slot it finds no node of)."""
        if not self._cluster:
            return None
        if kind == "register":
            stored = self._config_key(name)
        elif kind == "Semaphore":
            stored = self._semaphore_keys(name, "h")[0]  # all its keys share one slot
        else:
            stored = self._bucket_key(name, key)
        node = self._node(stored)
        return None if node is None else str(node.name)

    @property
    def rate_batch_is_one_round_trip(self) -> bool:
        """True until this store knows it talks to a cluster (a ``RedisCluster`` client, or
        a node that answered ``CROSSSLOT``): then `rate_batch` is one call per bucket."""
        return not self._one_slot

    async def rate_batch(
        self,
        name: str,
        interval_us: int,
        burst: int,
        requests: Sequence[tuple[bytes | None, int, int]],
    ) -> list[RateReply]:
        """Decisions on several buckets of limiter ``name`` (`NetworkStore.rate_batch`): one
        script call over all of them on one server. On a cluster (a ``RedisCluster``
        client, or a node that refuses a script over several slots with ``CROSSSLOT``,
        which it checks before running anything) `NetworkStore.rate_batch`'s one
        `rate_many` per bucket instead, side by side: a keyed limiter's keys are each their
        own hash slot on purpose."""
        bounded = caller_bounds.get()  # before the first await: set for that step only
        requests = check_batch(requests, interval_us, burst)
        if self._one_slot:
            return await super().rate_batch(name, interval_us, burst, requests)
        buckets = list(dict.fromkeys(key for key, _, _ in requests))
        index = {key: i for i, key in enumerate(buckets, 1)}
        args: list[int] = [interval_us, burst]
        for key, cost, max_wait_us in requests:
            args += (index[key], cost, max_wait_us)
        keys = [self._bucket_key(name, key) for key in buckets]
        try:
            out = await self._eval(RATE_BATCH, keys, args)
        except StoreUnavailable as exc:
            if not isinstance(exc.__cause__, self._cross_slot):
                raise
            self._one_slot = True  # a cluster's node: never again, per bucket from now
            # (It ran nothing.) Each bucket's call is bounded as this one is: the calls
            # start in the first step of the one below, in this context.
            token = caller_bounds.set(bounded)
            try:
                return await super().rate_batch(name, interval_us, burst, requests)
            finally:
                caller_bounds.reset(token)
        return _replies(out)

    async def rate_give_back(
        self, name: str, key: bytes | None, interval_us: int, cost: int, tat_us: int
    ) -> bool:
        """Undoes the charge that left the TAT at ``tat_us``, if it is still the last one."""
        _positive("cost", cost)
        check_bucket(interval_us, cost)
        done = await self._eval(
            GIVE_BACK, (self._bucket_key(name, key),), (interval_us, cost, tat_us)
        )
        return bool(done == 1)

    async def semaphore_acquire(
        self, name: str, limit: int, holder: str, lease_us: int, queue: bool
    ) -> SemaphoreReply:
        """A lease for ``holder``, FIFO (see `NetworkStore.semaphore_acquire`)."""
        _positive("limit", limit)
        check_lease(lease_us)
        if not holder:
            raise ValueError("holder must be a non-empty str")
        granted, fence, in_use, ahead = await self._eval(
            ACQUIRE,
            self._semaphore_keys(name, "hfqen"),
            (limit, holder, lease_us, 1 if queue else 0),
        )
        return SemaphoreReply(granted == 1, fence, in_use, ahead)

    async def semaphore_renew(self, name: str, holders: Sequence[str], lease_us: int) -> list[bool]:
        """Extends each valid lease to now + ``lease_us``; False for one that had expired."""
        check_lease(lease_us)
        if not holders:
            return []
        renewed = await self._eval(RENEW, self._semaphore_keys(name, "hf"), (lease_us, *holders))
        return [flag == 1 for flag in renewed]

    async def semaphore_release(self, name: str, holder: str) -> bool:
        """Ends ``holder``'s lease or its place in the queue; False if it had neither."""
        done = await self._eval(RELEASE, self._semaphore_keys(name, "hfqe"), (holder,))
        return bool(done == 1)

    async def semaphore_state(self, name: str) -> tuple[int, int]:
        """(valid leases, live queued waiters) of semaphore ``name`` now."""
        in_use, queued = await self._eval(STATE, self._semaphore_keys(name, "he"), ())
        return int(in_use), int(queued)

    async def aclose(self) -> None:
        """Closes the client this store made from ``url`` (never a given one) and the
        store's own connections to a given RedisCluster's nodes (calls made after go
        through that client); idempotent."""
        self._on_own_nodes = False
        nodes, self._nodes = self._nodes, {}
        for connections in nodes.values():
            await connections.aclose(lambda conn: conn.disconnect())
        if self._owned:
            self._owned = False
            if self._direct is not None:
                await self._direct.aclose(lambda conn: conn.disconnect())
            await self._client.aclose()
