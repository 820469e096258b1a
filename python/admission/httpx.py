"""httpx transports that keep a client within its providers' limits: `AsyncTransport` (for
``httpx.AsyncClient``) and `Transport` (for ``httpx.Client``).

::

    import admission as adm, httpx

    transport = adm.httpx.AsyncTransport(
        limits={"api.openai.com": adm.presets.openai(rpm=500, tpm=200_000, concurrency=50)},
        retry=adm.Retry(attempts=6, deadline="2m"),
    )
    client = httpx.AsyncClient(transport=transport)
    # openai.AsyncOpenAI(http_client=client, max_retries=0): the SDK's own retries (2 by
    # default) would stack on top of these.

Per request, to the request's host (``limits`` by host name, or ``host:port``; other hosts
get ``default``, kept for the ``max_hosts`` most recently used ones: bounded memory):

1. **Pause**: nothing is sent to a host before the end of a pause a 429 asked for (with
   ``Retry-After``, ``retry-after-ms`` or an HTTP date): one caller's 429 holds back every
   caller of that host, and its rate limiters too (waiters keep their order).
2. **Admission**: a permit of the host's concurrency (held until the response body is
   closed: a streamed answer is in flight until then), then one request and the request's
   estimated tokens (`admission.presets`), all or nothing, FIFO; then the host's circuit
   breaker (``breaker="per-host"``, one `CircuitBreaker` per host; or one breaker for all, or
   None).
3. **The provider's word**: after every response, the presets' headers (OpenAI's
   ``x-ratelimit-*``, Anthropic's ``anthropic-ratelimit-*``) sync the host's buckets: they
   never believe they hold more than the provider says.
4. **Retries** (``retry``, a `Retry`; its own backoff, deadline, budget): 429, 502, 503, 504
   and transport errors, on idempotent methods. A POST is retried on a 429 and on errors
   before anything was sent (connect errors, pool timeouts), which the provider never saw;
   with ``retry_post=True`` like an idempotent request (LLM APIs: a completion is safe to
   ask again). When the retries give up on a status, its last response is returned, as
   httpx would have.
5. **Tokens settled**: the estimate is reserved, then settled at the ``usage`` the response
   states (a JSON body, or a stream of server-sent events: when the stream is closed); a
   refusal (429, 5xx, a transport error) settles at zero tokens.

`stats` gives per-host counts; the same figures are exported as metrics with a ``host``
label (the host, never a URL): ``admission_http_requests_total``,
``admission_http_rate_limited_total`` (429s seen), ``admission_http_retries_total``,
``admission_http_pauses_total``, ``admission_http_tokens_total`` (settled).

httpx is an optional dependency: ``pip install 'admission[httpx]'``.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import queue
import sys
import threading
import time
import warnings
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, final

from admission._extras import require

require("httpx", "httpx", "admission.httpx")

import httpx  # noqa: E402 - after the check that names the extra

from admission import _backend, _native  # noqa: E402
from admission._hints import retry_after  # noqa: E402
from admission.breaker import CircuitBreaker  # noqa: E402
from admission.concurrency import Semaphore  # noqa: E402
from admission.metrics.families import Family, Sample, add_source  # noqa: E402
from admission.presets import HostLimits, usage_tokens  # noqa: E402
from admission.presets import host as _host_preset  # noqa: E402
from admission.rate import TokenBucket  # noqa: E402
from admission.reserve import Reservation, Reserve  # noqa: E402
from admission.retry import Retry  # noqa: E402

__all__ = ["AsyncTransport", "HostStats", "Transport"]

RETRY_STATUSES = frozenset({429, 502, 503, 504})
"""Statuses retried: too many requests, and the gateway's word that nothing was served."""
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# Failures before the request left: the server never saw it, any method may go again.
_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# The most of a response body kept to read its usage (an LLM answer is far smaller).
_MAX_USAGE_BODY = 4 * 1024 * 1024

BreakerArg = Literal["per-host"] | CircuitBreaker | None


@dataclass(frozen=True, slots=True)
class HostStats:
    """What a transport did for one host."""

    host: str
    """The host, or ``host:port`` (never a URL)."""
    requests: int
    """Requests sent (every attempt)."""
    rate_limited: int
    """429 responses seen."""
    retries: int
    """Attempts after the first of each request."""
    pauses: int
    """Pauses a 429 started (or lengthened)."""
    tokens_reserved: int
    """Tokens reserved at the estimates."""
    tokens_settled: int
    """Tokens settled at the responses' usage (what the provider counted)."""


class _Retryable(Exception):
    """A response with a retryable status: the `Retry` sees a failure with its hint."""

    def __init__(self, response: httpx.Response, host: str, hint: float | None) -> None:
        super().__init__(f"{response.status_code} from {host}")
        self.response = response
        self.retry_after = hint


class _Final(Exception):
    """A failure that must not be retried (a POST the server may have seen): carried through
    the `Retry` unretried, then raised as it was."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


_CALLS, _ATTEMPTS, _REQUESTS, _RATE_LIMITED, _PAUSES = range(5)


def _value(count: itertools.count[int]) -> int:
    """How many times ``next`` was called on ``count``: its repr is "count(N)", its next
    value, read without taking it."""
    return int(repr(count)[6:-1])


class _Host:
    """One host's limits, breaker, pause and counts."""

    __slots__ = (
        "breaker",
        "counts",
        "estimate_with",
        "key",
        "limiters",
        "limits",
        "max_tokens",
        "not_before",
        "primary",
        "requests_bucket",
        "semaphore",
        "synced",
        "tick",
        "tokens",
        "tokens_bucket",
        "vendor",
    )

    def __init__(self, key: str, limits: HostLimits, breaker: CircuitBreaker | None) -> None:
        self.key = key
        self.limits = limits
        self.semaphore = Semaphore(limits.concurrency) if limits.concurrency else None
        period = limits.period
        self.requests_bucket = TokenBucket(limits.rpm, period) if limits.rpm else None
        self.tokens_bucket = TokenBucket(limits.tpm, period) if limits.tpm else None
        self.limiters = tuple(b for b in (self.requests_bucket, self.tokens_bucket) if b)
        # Never more than the bucket holds: the provider would refuse it anyway.
        self.max_tokens = self.tokens_bucket.burst if self.tokens_bucket is not None else 0
        # The default estimate's most tokens an answer may take (None: a user's `estimate`).
        self.estimate_with = limits.default_max_tokens if limits.estimate is None else None
        # The tokens bucket (the last limiter) is what a reservation's `settle(n)` settles.
        self.primary = len(self.limiters) - 1 if self.tokens_bucket is not None else None
        # Whether a response's headers say anything to these buckets.
        self.synced = limits.headers is not None and bool(self.limiters)
        self.vendor = limits.headers or ""  # ("": read only when synced)
        self.breaker = breaker
        self.not_before = 0.0
        # calls, attempts, requests, rate_limited, pauses: `next()` on a count is atomic
        # (the sync transport counts from many threads) and cheaper than a lock.
        self.counts = tuple(itertools.count() for _ in range(5))
        # Their `__next__`, bound: ``host.tick[_CALLS]()`` counts with no Python frame.
        self.tick = tuple(count.__next__ for count in self.counts)
        # Tokens reserved and settled (atomic sums: no lock).
        self.tokens = _native.TokenTally()

    def estimate(self, request: httpx.Request) -> int:
        if self.tokens_bucket is None:
            return 0
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = b""  # a streamed upload: no estimate but the default
        most = self.estimate_with
        tokens = None
        if most is not None and body:  # (the usual: read natively, no method around it)
            tokens = _native.estimate_tokens(body, most)
        if tokens is None:
            tokens = self.limits.estimate_tokens(body)
        return min(tokens, self.max_tokens)

    def costs(self, tokens: int) -> tuple[int, ...]:
        if self.requests_bucket is None:
            return (tokens,)
        return (1,) if self.tokens_bucket is None else (1, tokens)

    def settle(self, reservation: Reservation | None, tokens: int | None) -> None:
        """Settles the tokens at ``tokens`` (None: the estimate stands)."""
        if reservation is not None and self.tokens_bucket is not None:
            # (one native call: the tokens bucket is the reservation's primary)
            self.tokens.settle_reservation(reservation, tokens)

    def reserve(self, tokens: int) -> Reserve:
        """The reservation's waiting path (``tokens.reserve_now`` is its immediate one):
        count the tokens with `reserved` once admitted."""
        return Reserve(self.limiters, self.costs(tokens), None, "keep", self.primary)

    def reserved(self, tokens: int) -> None:
        if self.tokens_bucket is not None:
            self.tokens.reserve(tokens)

    def pause(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        if until <= self.not_before:
            return
        self.not_before = until
        self.tick[_PAUSES]()
        for bucket in self.limiters:
            bucket.pause(seconds)

    def sync(self, headers: httpx.Headers) -> None:
        # The raw pairs, read in one native pass (httpx looks each name up by a scan of them
        # all); the reset times a bucket's refill only when the bucket mirrors the provider's
        # quota (no larger than it).
        _native.sync_quotas(headers.raw, self.vendor, self.requests_bucket, self.tokens_bucket)

    def stats(self) -> HostStats:
        calls, attempts, requests, limited, pauses = map(_value, self.counts)
        reserved, settled = self.tokens.read()
        return HostStats(self.key, requests, limited, attempts - calls, pauses, reserved, settled)


class _Hosts:
    """The hosts of one transport: those configured (kept), the others (the most recent
    ``max_hosts``, each with the default limits)."""

    def __init__(
        self,
        limits: Mapping[str, HostLimits] | None,
        default: HostLimits | None,
        breaker: BreakerArg,
        max_hosts: int,
    ) -> None:
        if (
            breaker is not None
            and breaker != "per-host"
            and not isinstance(breaker, CircuitBreaker)
        ):
            raise TypeError(
                f"breaker must be 'per-host', an admission.CircuitBreaker or None, got {breaker!r}"
            )
        if isinstance(max_hosts, bool) or not isinstance(max_hosts, int) or max_hosts < 1:
            raise ValueError(f"max_hosts must be an int >= 1, got {max_hosts!r}")
        for key, value in (limits or {}).items():
            if not isinstance(value, HostLimits):
                raise TypeError(
                    f"limits[{key!r}] must be an admission.presets preset "
                    f"(adm.presets.openai(...), ...), got {value!r}"
                )
        self._breaker = breaker
        self._configured = {key: self._make(key, value) for key, value in (limits or {}).items()}
        # The configured hosts by the requests' netloc, as they come (one lookup each).
        self._by_netloc: dict[bytes, _Host] = {}
        self._default = _host_preset() if default is None else default
        self._others: collections.OrderedDict[str, _Host] = collections.OrderedDict()
        self._max = max_hosts
        self._lock = threading.Lock()

    def _make(self, key: str, limits: HostLimits) -> _Host:
        breaker = self._breaker
        if breaker == "per-host":
            breaker = CircuitBreaker(name=key)
        return _Host(key, limits, breaker)

    def get(self, url: httpx.URL) -> _Host:
        netloc = url.netloc
        found = self._by_netloc.get(netloc)
        if found is not None:
            return found
        name = url.host
        key = f"{name}:{url.port}" if url.port is not None else name
        found = self._configured.get(key) or self._configured.get(name)
        if found is not None:
            if len(self._by_netloc) < 4 * len(self._configured):  # (bounded)
                self._by_netloc[netloc] = found
            return found
        with self._lock:
            found = self._others.get(key)
            if found is None:
                found = self._others[key] = self._make(key, self._default)
                if len(self._others) > self._max:
                    self._others.popitem(last=False)
            else:
                self._others.move_to_end(key)
            return found

    def all(self) -> list[_Host]:
        with self._lock:
            return [*self._configured.values(), *self._others.values()]


class _Config:
    """What both transports share: the hosts, the retry, which requests may be retried."""

    def __init__(
        self,
        limits: Mapping[str, HostLimits] | None,
        default: HostLimits | None,
        retry: Retry | None,
        breaker: BreakerArg,
        retry_post: bool,
        max_hosts: int,
    ) -> None:
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"retry must be an admission.Retry or None, got {retry!r}")
        self.hosts = _Hosts(limits, default, breaker, max_hosts)
        self.retry = Retry(attempts=5, deadline="60s", name="httpx") if retry is None else retry
        self.retry_post = bool(retry_post)

    def outcome(
        self, host: _Host, response: httpx.Response, retried: bool
    ) -> tuple[bool, float | None]:
        """After a response of a status in `RETRY_STATUSES` (the host synced already): a
        429 pauses the host. Returns (retry it?, hint)."""
        status = response.status_code
        hint = retry_after(response)
        if status == 429:
            host.tick[_RATE_LIMITED]()
            if hint is not None and hint > 0:
                host.pause(hint)
        return retried or status == 429, hint

    def failed(self, error: Exception, retried: bool) -> Exception:
        """What a transport error raises into the retry: itself, or kept from retrying."""
        if retried or isinstance(error, _UNSENT):
            return error
        return _Final(error)


class _Settle:
    """Runs once when a response's body is closed (`finish`): settles its tokens, releases
    its permit. The body wrappers below are one (one object per response, not two).

    A body collected unclosed (its response dropped by a caller that never closed it) is
    finished by `_reaper`, at the estimate (what was read of it is not a whole answer), with
    a ``ResourceWarning`` naming its URL, as CPython warns of an unclosed file: otherwise its
    permit would be held for good, and ``concurrency`` such responses would stop the host.
    """

    __slots__ = ("_stream", "body", "done", "host", "permit", "reservation", "size", "url")

    def __init__(
        self,
        host: _Host,
        reservation: Reservation | None,
        permit: Semaphore | None,
        stream: object = None,
        url: httpx.URL | None = None,
    ) -> None:
        self._stream = stream  # (the wrapped body's stream)
        self.url = url  # (for the warning if it is collected unclosed)
        self.host = host
        self.reservation = reservation
        self.permit = permit
        self.body: list[bytes] | None = [] if host.tokens_bucket is not None else None
        self.size = 0
        self.done = False
        if _reaper.idle:  # (a safe point for starting the thread: see `_Reaper`)
            _reaper.start()

    def keep(self, chunk: bytes) -> None:
        body = self.body
        if body is not None:
            self.size += len(chunk)
            if self.size > _MAX_USAGE_BODY:
                self.body = None  # too large to read: the estimate stands
            else:
                body.append(chunk)

    def __del__(self) -> None:
        # (Every body passes here when it is freed: a closed one returns at once.)
        if self.done:
            return
        # Collected unclosed: finished by the reaper (`_Reaper` says why not here), at the
        # estimate (what was read of a stream may state a partial usage: Anthropic's first
        # event does). The stream is let go here, where it would have been freed anyway.
        del self._stream
        if self.body is not None:
            self.body = []
        _reaper.put(self)
        url = self.url
        where = "" if url is None else f" from {url.scheme}://{url.netloc.decode()}{url.path}"
        # Last: a filter may make it an exception, which a finalizer can only print.
        warnings.warn(
            f"admission.httpx: a response{where} was never closed; what it held (its host's "
            "concurrency permit, its tokens at the estimate) is given back only now that it "
            "is collected (close it: `async with client.stream(...)`, `with "
            "client.stream(...)`, or `response.aclose()`)",
            ResourceWarning,
            source=self,
            stacklevel=1,
        )

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            body, reservation = self.body, self.reservation
            if body is not None and reservation is not None:
                data = b"".join(body)
                sure, tokens = _native.usage_tokens(data)  # (no Python function around it)
                if not sure:
                    tokens = usage_tokens(data)  # what the native reading is not sure of
                self.host.tokens.settle_reservation(reservation, tokens)
        finally:
            if self.permit is not None:
                self.permit.release()


class _AsyncBody(_Settle, httpx.AsyncByteStream):
    _stream: httpx.AsyncByteStream

    def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self._stream.__aiter__()
        if self.body is None:  # nothing to read the usage from: the stream's own chunks
            return chunks
        return _Kept(self, chunks)

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self.finish()


@final
class _Kept:
    """A body's chunks, each kept (`_Settle.keep`) as it passes: an iterator, not an async
    generator (cheaper to make and to step, and nothing of its own to finalize)."""

    __slots__ = ("_chunks", "_settle")

    def __init__(self, settle: _Settle, chunks: AsyncIterator[bytes]) -> None:
        self._settle = settle
        self._chunks = chunks

    def __aiter__(self) -> _Kept:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._chunks.__anext__()
        self._settle.keep(chunk)
        return chunk


class _SyncBody(_Settle, httpx.SyncByteStream):
    _stream: httpx.SyncByteStream

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._stream:
            self.keep(chunk)
            yield chunk

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self.finish()


@final
class _Reaper:
    """Finishes the bodies collected unclosed (`_Settle.__del__` puts them here), in a daemon
    thread of its own, started with the first transport.

    Why not in the finalizer itself: a finalizer runs wherever the garbage collector (or the
    last reference dropped) happens to run, in any thread, in the middle of any code,
    including the code of the very limiter it would release into. Two such places exist:
    the native semaphore's ``cancel`` drops the withdrawn waiter's waker (a Python object)
    while it holds the queue's lock (rust/core/src/semaphore.rs), and a thread waiter's waker
    is a `threading.Event`, whose ``set`` allocates while it holds its condition's lock (a
    plain, non-reentrant one). A finalizer running there and releasing a permit would take the
    queue's lock, or call that ``set``, again in the thread that holds it: a deadlock.

    Why this is sound: the finalizer only calls `queue.SimpleQueue.put`, documented as
    reentrant (safe in ``__del__`` and weakref callbacks), and ``warnings.warn``, as CPython's
    own finalizers do. `finish` then runs in this thread's loop, at its top level, where it
    holds no lock but the GIL, so every lock its release and settle take is free or held by
    another thread (which will let it go); the wakers it calls are those any other thread
    calls (`Event.set`, ``call_soon_threadsafe``, trio's ``run_sync_soon``), so waiters on any
    loop or in any thread are woken. A thread, not the owning event loop: the sync
    transport's waiters have no loop, and the loop may have ended.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Settle] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: No thread yet in this process: the next body wrapped starts it (one check a body).
        self.idle = True

    def put(self, settle: _Settle) -> None:
        self._queue.put(settle)

    def start(self) -> None:
        """Starts the thread if it is not running (when a body is first wrapped: a safe
        point; a process that never streams a response, a pre-fork master that only makes
        its transports, has no thread)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, args=(self._queue,), name="admission.httpx reaper"
                )
                self._thread.daemon = True
                self._thread.start()
            self.idle = False

    def _run(self, bodies: queue.SimpleQueue[_Settle]) -> None:
        while True:
            settle = bodies.get()
            try:
                settle.finish()
            except BaseException as error:  # (nobody to raise to: told as a finalizer's error)
                with contextlib.suppress(BaseException):  # (a raising hook: this thread goes on)
                    sys.unraisablehook(_Unraisable(error, settle))
            del settle  # (not kept alive while waiting for the next)

    def forked(self) -> None:
        """In a child process: the thread did not come along, and the queue's lock may be in
        the state another thread left it: both anew."""
        self._queue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread, self.idle = None, True  # (started again by the child's next body)


@final
class _Unraisable:
    """What `sys.unraisablehook` reads: an error the reaper had nobody to raise to."""

    def __init__(self, error: BaseException, settle: object) -> None:
        self.exc_type: type[BaseException] = type(error)
        self.exc_value: BaseException | None = error
        self.exc_traceback: TracebackType | None = error.__traceback__
        self.err_msg: str | None = "admission.httpx: finishing a body collected unclosed failed"
        self.object: object = settle


_reaper = _Reaper()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reaper.forked)


async def _abandon_async(response: httpx.Response) -> None:
    """Closes a response the caller will not get (retried, or judged by a ``retry_if`` that
    raised): its permit goes back, its tokens are settled at the estimate (it is not read).
    A failure to close it is not raised: the caller's own exception (or the retry) goes on."""
    with contextlib.suppress(Exception):
        await response.aclose()


def _abandon(response: httpx.Response) -> None:
    """`_abandon_async` in threads."""
    with contextlib.suppress(Exception):
        response.close()


def _unwrap(error: Exception) -> httpx.Response:
    """The end of a request the retry gave up on: the last response, or the error raised."""
    if isinstance(error, _Retryable):
        return error.response
    if isinstance(error, _Final):
        raise error.error
    raise error


@final
class AsyncTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncClient`` transport within the hosts' limits (see the module docstring).

    Args:
        inner: the transport that sends (default ``httpx.AsyncHTTPTransport()``).
        limits: host (or ``host:port``) -> `admission.presets` preset.
        default: the preset of every other host (default ``presets.host(concurrency=20)``).
        retry: the `Retry` of each request (default ``Retry(attempts=5, deadline="60s")``).
        breaker: ``"per-host"`` (default), one `CircuitBreaker` for all hosts, or None.
        retry_post: retry POSTs (and other non-idempotent methods) like idempotent ones.
        max_hosts: how many hosts with the default preset are kept (least recently used
            ones are dropped beyond).
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        limits: Mapping[str, HostLimits] | None = None,
        default: HostLimits | None = None,
        retry: Retry | None = None,
        breaker: BreakerArg = "per-host",
        retry_post: bool = False,
        max_hosts: int = 256,
    ) -> None:
        self._inner = httpx.AsyncHTTPTransport() if inner is None else inner
        self._config = _Config(limits, default, retry, breaker, retry_post, max_hosts)
        # Wrapped once, not per request; a response the retry drops is closed.
        self._send = self._config.retry._async(self._attempt, _abandon_async)
        # The retry's fast path, run inline: the first attempt is awaited with no retry
        # coroutine around it (None: a retry with a breaker, every request by `_send`).
        self._first = self._config.retry._first_async()
        _track(self)

    def stats(self) -> dict[str, HostStats]:
        """Per host (the configured ones, and the others still kept)."""
        return {h.key: h.stats() for h in self._config.hosts.all()}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = self._config.hosts.get(request.url)
        host.tick[_CALLS]()
        tokens = host.estimate(request)
        first = self._first
        try:
            if first is None:
                return await self._send(request, host, tokens)
            # What the retry's wrapper does (`Retry._async`), with the attempt awaited here.
            started, first_ok, now, retry_if, deposit = first
            start = now()
            started()
            if deposit is not None:
                deposit()
            response: httpx.Response | None = None
            retry = self._config.retry
            try:
                response = await self._attempt(request, host, tokens)
            except BaseException as exc:
                failure: BaseException | None = exc
            else:
                try:
                    again = retry_if is not None and retry_if(response)
                except BaseException as error:
                    retry._misjudged(error)
                    await _abandon_async(response)  # (the caller never gets it)
                    raise
                if not again:
                    first_ok()
                    return response
                failure = None
            args = (request, host, tokens)
            return await retry._after_first_async(
                start, failure, response, self._attempt, args, None, _abandon_async
            )
        except (_Retryable, _Final) as gave_up:
            return _unwrap(gave_up)

    async def _attempt(self, request: httpx.Request, host: _Host, tokens: int) -> httpx.Response:
        config = self._config
        host.tick[_ATTEMPTS]()
        wait = host.not_before - time.monotonic()
        if wait > 0:
            await _backend.current().sleep(wait)
        permit = host.semaphore
        if permit is not None:
            await permit.acquire()
        settle: _Settle | None = None
        try:
            reservation = None
            if host.limiters:
                # (one native call: the request and the tokens, counted as reserved)
                reservation = host.tokens.reserve_now(
                    host.requests_bucket, host.tokens_bucket, tokens
                )
                if reservation is None:
                    reservation = await host.reserve(tokens).acquire()
                    host.reserved(tokens)
            breaker = host.breaker
            if breaker is not None and not breaker.try_acquire():
                host.settle(reservation, 0)
                raise breaker.refusal()
            host.tick[_REQUESTS]()
            start = time.monotonic()
            retried = config.retry_post or request.method in IDEMPOTENT
            try:
                response = await self._inner.handle_async_request(request)
            except Exception as error:
                if breaker is not None:
                    breaker.record(False, time.monotonic() - start)
                host.settle(reservation, 0)
                raise config.failed(error, retried) from None
            except BaseException:
                if breaker is not None:
                    breaker.release()
                raise
            if breaker is not None:
                # (a 429 says the caller is too fast, not that the host is unwell)
                breaker.record(response.status_code < 500, time.monotonic() - start)
            if host.synced:
                host.sync(response.headers)
            if response.status_code in RETRY_STATUSES:
                again, hint = config.outcome(host, response, retried)
                if again:
                    try:
                        await response.aread()
                    finally:
                        await response.aclose()
                    host.settle(reservation, 0)
                    raise _Retryable(response, host.key, hint)
            if response.is_closed:  # read already (a body given whole): settled now
                settle = _Settle(host, reservation, permit)
                settle.keep(response.content)
                settle.finish()
            else:
                stream = response.stream
                assert isinstance(stream, httpx.AsyncByteStream)
                response.stream = settle = _AsyncBody(
                    host, reservation, permit, stream, request.url
                )
            return response
        finally:
            if settle is None and permit is not None:
                permit.release()

    async def aclose(self) -> None:
        await self._inner.aclose()


@final
class Transport(httpx.BaseTransport):
    """`AsyncTransport` for ``httpx.Client`` (threads): the same arguments, waits in the
    calling thread."""

    def __init__(
        self,
        inner: httpx.BaseTransport | None = None,
        *,
        limits: Mapping[str, HostLimits] | None = None,
        default: HostLimits | None = None,
        retry: Retry | None = None,
        breaker: BreakerArg = "per-host",
        retry_post: bool = False,
        max_hosts: int = 256,
    ) -> None:
        self._inner = httpx.HTTPTransport() if inner is None else inner
        self._config = _Config(limits, default, retry, breaker, retry_post, max_hosts)
        # Wrapped once, not per request; a response the retry drops is closed.
        self._send = self._config.retry._blocking(self._attempt, _abandon)
        _track(self)

    def stats(self) -> dict[str, HostStats]:
        """Per host (the configured ones, and the others still kept)."""
        return {h.key: h.stats() for h in self._config.hosts.all()}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = self._config.hosts.get(request.url)
        host.tick[_CALLS]()
        tokens = host.estimate(request)
        try:
            return self._send(request, host, tokens)
        except (_Retryable, _Final) as gave_up:
            return _unwrap(gave_up)

    def _attempt(self, request: httpx.Request, host: _Host, tokens: int) -> httpx.Response:
        config = self._config
        host.tick[_ATTEMPTS]()
        wait = host.not_before - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        permit = host.semaphore
        if permit is not None:
            permit.acquire_blocking()
        settle: _Settle | None = None
        try:
            reservation = None
            if host.limiters:
                # (one native call: the request and the tokens, counted as reserved)
                reservation = host.tokens.reserve_now(
                    host.requests_bucket, host.tokens_bucket, tokens
                )
                if reservation is None:
                    reservation = host.reserve(tokens).acquire_blocking()
                    host.reserved(tokens)
            breaker = host.breaker
            if breaker is not None and not breaker.try_acquire():
                host.settle(reservation, 0)
                raise breaker.refusal()
            host.tick[_REQUESTS]()
            start = time.monotonic()
            retried = config.retry_post or request.method in IDEMPOTENT
            try:
                response = self._inner.handle_request(request)
            except Exception as error:
                if breaker is not None:
                    breaker.record(False, time.monotonic() - start)
                host.settle(reservation, 0)
                raise config.failed(error, retried) from None
            except BaseException:
                if breaker is not None:
                    breaker.release()
                raise
            if breaker is not None:
                # (a 429 says the caller is too fast, not that the host is unwell)
                breaker.record(response.status_code < 500, time.monotonic() - start)
            if host.synced:
                host.sync(response.headers)
            if response.status_code in RETRY_STATUSES:
                again, hint = config.outcome(host, response, retried)
                if again:
                    try:
                        response.read()
                    finally:
                        response.close()
                    host.settle(reservation, 0)
                    raise _Retryable(response, host.key, hint)
            if response.is_closed:  # read already (a body given whole): settled now
                settle = _Settle(host, reservation, permit)
                settle.keep(response.content)
                settle.finish()
            else:
                stream = response.stream
                assert isinstance(stream, httpx.SyncByteStream)
                response.stream = settle = _SyncBody(host, reservation, permit, stream, request.url)
            return response
        finally:
            if settle is None and permit is not None:
                permit.release()

    def close(self) -> None:
        self._inner.close()


# -- metrics --------------------------------------------------------------------------------

_live: weakref.WeakSet[AsyncTransport | Transport] = weakref.WeakSet()
_live_lock = threading.Lock()


def _track(transport: AsyncTransport | Transport) -> None:
    with _live_lock:
        _live.add(transport)


def _families() -> Iterable[Family]:
    with _live_lock:
        transports = list(_live)
    totals: dict[str, list[int]] = {}
    for transport in transports:
        for key, s in transport.stats().items():
            row = totals.setdefault(key, [0, 0, 0, 0, 0])
            for i, n in enumerate(
                (s.requests, s.rate_limited, s.retries, s.pauses, s.tokens_settled)
            ):
                row[i] += n
    if not totals:
        return
    described = (
        ("admission_http_requests", "Requests the httpx transports sent, by host (every attempt)."),
        ("admission_http_rate_limited", "429 responses the httpx transports saw, by host."),
        ("admission_http_retries", "Retries the httpx transports made, by host."),
        ("admission_http_pauses", "Pauses a 429 started on a host."),
        ("admission_http_tokens", "Tokens settled at the responses' usage, by host."),
    )
    for i, (name, text) in enumerate(described):
        samples = tuple(Sample({"host": key}, float(row[i])) for key, row in sorted(totals.items()))
        yield Family(name, "counter", text, samples)


add_source(_families)
