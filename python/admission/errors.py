"""The exceptions admission raises on purpose. Catch `AdmissionError` for all of them."""

from __future__ import annotations

import errno

__all__ = [
    "AcquireTimeout",
    "AdmissionError",
    "CapacityError",
    "CircuitOpen",
    "Closed",
    "ConfigError",
    "PortInUseError",
    "StoreUnavailable",
    "UnknownLimit",
]


class AdmissionError(Exception):
    """Base class of every error admission raises on purpose."""


class CapacityError(AdmissionError, ValueError):
    """A request that can never be admitted: its cost exceeds the limiter's capacity.

    Raised at once instead of waiting forever. Raise the capacity (``burst``, ``limit``) or
    split the request.

    >>> import admission as adm
    >>> adm.TokenBucket(rate=10, burst=5).try_acquire(cost=6)
    Traceback (most recent call last):
    admission.errors.CapacityError: cost 6 exceeds the capacity 5: it can never be admitted ...
    """

    def __init__(self, cost: int, capacity: int) -> None:
        super().__init__(
            f"cost {cost} exceeds the capacity {capacity}: it can never be admitted "
            "(raise the capacity or split the request)"
        )
        self.cost = cost
        self.capacity = capacity

    def __reduce__(self) -> tuple[type[CapacityError], tuple[int, int]]:
        return (type(self), (self.cost, self.capacity))


class CircuitOpen(AdmissionError):
    """A call refused by an open `CircuitBreaker` (or a half-open one with every probe out).

    ``retry_after`` is the seconds until the breaker lets a probe through (0.0 when half-open:
    the verdict is due when the probes finish); ``breaker`` its name; ``state`` "open" or
    "half_open". Nothing was called.

    >>> e = CircuitOpen(12.5, "openai")
    >>> e.retry_after, str(e)
    (12.5, "circuit breaker 'openai' is open: retry after 12.500 s")
    """

    def __init__(self, retry_after: float, breaker: str | None = None, state: str = "open") -> None:
        who = "circuit breaker" if breaker is None else f"circuit breaker {breaker!r}"
        if state == "half_open":
            message = f"{who} is half-open and every probe is out: retry shortly"
        else:
            message = f"{who} is open: retry after {retry_after:.3f} s"
        super().__init__(message)
        self.retry_after = retry_after
        self.breaker = breaker
        self.state = state

    def __reduce__(self) -> tuple[type[CircuitOpen], tuple[float, str | None, str]]:
        return (type(self), (self.retry_after, self.breaker, self.state))


class Closed(AdmissionError):
    """The primitive was closed: it admits nothing new. Permits already held stay valid."""


class AcquireTimeout(AdmissionError, TimeoutError):
    """An acquisition that could not complete within its timeout.

    ``needed`` is the wait, in seconds, admission would have needed when it was known up front
    (rate limits know it exactly and fail at once instead of sleeping until the deadline);
    ``None`` when it depended on other holders (semaphores).

    This is how a rate limit refuses a request that must not wait (there is no separate
    "rate limited" error): ``timeout=0`` asks for now or never, and ``needed`` is the
    retry-after to pass on, e.g. as a 429's ``Retry-After``:

    >>> import admission as adm
    >>> clock = adm.testing.ManualClock()
    >>> bucket = adm.TokenBucket(rate=1, burst=1, clock=clock)
    >>> bucket.acquire_blocking()
    >>> try:
    ...     bucket.acquire_blocking(timeout=0)
    ... except adm.AcquireTimeout as e:
    ...     print(f"retry after {e.needed} s")
    retry after 1.0 s
    """

    def __init__(self, timeout: float, needed: float | None = None) -> None:
        if needed is None:
            message = f"not admitted within the timeout of {timeout:.3f} s"
        else:
            message = (
                f"admission needs {needed:.3f} s, more than the timeout of {timeout:.3f} s: "
                "failed at once instead of waiting"
            )
        super().__init__(message)
        self.timeout = timeout
        self.needed = needed

    def __reduce__(self) -> tuple[type[AcquireTimeout], tuple[float, float | None]]:
        return (type(self), (self.timeout, self.needed))


class ConfigError(AdmissionError, ValueError):
    """Invalid configuration: says where (file or variable), which key, what was expected and found.

    >>> import admission as adm
    >>> adm.parse_duration("ten seconds", key="limits.rag.timeout")
    Traceback (most recent call last):
    admission.errors.ConfigError: limits.rag.timeout: expected a duration such as "10s", ...
    """

    def __init__(self, problem: str, *, key: str | None = None, source: str | None = None) -> None:
        where = ": ".join(part for part in (source, key) if part)
        super().__init__(f"{where}: {problem}" if where else problem)
        self.problem = problem
        self.key = key
        self.source = source

    def at(self, source: str) -> ConfigError:
        """The same error, located in ``source`` (a file, or an environment variable)."""
        return ConfigError(self.problem, key=self.key, source=self.source or source)

    def __reduce__(self) -> tuple[object, ...]:
        return (_config_error, (self.problem, self.key, self.source))


def _config_error(problem: str, key: str | None, source: str | None) -> ConfigError:
    return ConfigError(problem, key=key, source=source)


class PortInUseError(AdmissionError, OSError):
    """`admission.metrics.serve` could not listen: another process (or exporter) has the port.

    An `OSError` with ``errno.EADDRINUSE``; ``port`` and ``addr`` say which. Typical cause:
    several worker processes (``uvicorn --workers 2``, gunicorn) each calling ``serve`` with
    the same port. Give each process its own port (see the README's "Metrics" section).

    >>> import errno
    >>> e = PortInUseError(9464, "127.0.0.1")
    >>> e.errno == errno.EADDRINUSE, isinstance(e, OSError), e.port
    (True, True, 9464)
    """

    def __init__(self, port: int, addr: str) -> None:
        host = f"[{addr}]" if ":" in addr else addr
        self.message = (
            f"cannot serve metrics on {host}:{port} (port={port}): the address is already in "
            "use, by another process or exporter (several worker processes each calling "
            "serve() with one port?); give each process its own port, e.g. "
            "serve(port=9464 + worker_index), or serve(port=0) for a free one"
        )
        super().__init__(errno.EADDRINUSE, self.message)
        self.port = port
        self.addr = addr

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type[PortInUseError], tuple[int, str]]:
        return (type(self), (self.port, self.addr))


class UnknownLimit(AdmissionError, KeyError):
    """No limit of that name (or it lacks the limiter asked for); the message lists the known ones.

    >>> import admission as adm
    >>> m = adm.ConcurrencyManager.from_dict({"limits": {"openai": {"policy": "openai"}}})
    >>> m.semaphore("opena")
    Traceback (most recent call last):
    admission.errors.UnknownLimit: no limit named 'opena' (did you mean 'openai'?); known: openai
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message

    def __str__(self) -> str:
        # KeyError's str() shows the repr of its argument; a message reads better plainly.
        return self.message

    def __reduce__(self) -> tuple[type[UnknownLimit], tuple[str, str]]:
        return (type(self), (self.name, self.message))


class StoreUnavailable(AdmissionError, ConnectionError):
    """A network store (``admission.stores.Postgres``, ``Redis``) did not answer in time, or
    answered with an error; ``store`` says which (without credentials).

    Raised to the caller by a limiter whose ``on_store_error`` is ``"closed"``; the other
    modes admit (``"open"``) or fall back to an in-process limiter (``"local"``) instead.
    ``__cause__`` holds the driver's error when there is one.

    >>> e = StoreUnavailable("redis://127.0.0.1:6379/0", "timed out after 0.1 s")
    >>> str(e), isinstance(e, ConnectionError)
    ('store redis://127.0.0.1:6379/0 unavailable: timed out after 0.1 s', True)
    """

    def __init__(self, store: str, reason: str) -> None:
        super().__init__(f"store {store} unavailable: {reason}")
        self.store = store
        self.reason = reason

    def __reduce__(self) -> tuple[type[StoreUnavailable], tuple[str, str]]:
        return (type(self), (self.store, self.reason))


class TooManyKeys(AdmissionError):
    """A new key could not be admitted: ``max_keys`` keys are held and none is at rest
    (every one holds permits, has waiters, or has used its bucket or window recently).

    ``try_acquire`` answers ``False`` instead; ``acquire`` raises this rather than wait for
    room that nothing promises.
    """
