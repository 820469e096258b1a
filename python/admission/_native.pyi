"""Type stubs of the native extension. Import `admission`, not this module."""

from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable, Sequence
from contextvars import Context
from types import TracebackType
from typing import Any, Literal, final

from typing_extensions import Self, disjoint_base

__all__ = [
    "MAX_PERMITS",
    "WAIT_BOUNDS",
    "Acquire",
    "AllOf",
    "BreakerAwaitable",
    "BreakerCall",
    "BreakerFunction",
    "CircuitBreaker",
    "Deadlines",
    "Decision",
    "KeyedSemaphore",
    "KeyedSlidingWindow",
    "KeyedTokenBucket",
    "LoopClock",
    "ManualClock",
    "RateTicket",
    "Ready",
    "Reservation",
    "Scrape",
    "Semaphore",
    "SharedKeyedTokenBucket",
    "SharedSegment",
    "SharedSemaphore",
    "SharedTokenBucket",
    "SlidingWindow",
    "Ticket",
    "TokenBucket",
    "TokenTally",
    "Waiter",
    "WakeBatch",
    "_count_result_lookups",
    "_drain_retired",
    "_forget_running_loop",
    "_track_retired",
    "estimate_tokens",
    "monotonic_ns",
    "read_quotas",
    "sync_quotas",
    "take_now",
    "usage_tokens",
]

MAX_PERMITS: int
WAIT_BOUNDS: tuple[float, ...]
"""Finite upper bounds (seconds) of the wait-time histogram's buckets; +Inf follows."""

def monotonic_ns() -> int: ...
def _track_retired(enabled: bool, max_keys: int) -> None:
    """Starts (or stops) keeping the final counters of dropped primitives, for at most
    ``max_keys`` distinct (kind, name) between two drains."""

def _forget_running_loop() -> None:
    """Drops this thread's cached running loop (run in a forked child)."""

def _count_result_lookups(counting: bool) -> int:
    """Counts asyncio's lookups of ``result`` by C string on waiters (``True``), or stops
    (``False``); returns the lookups counted since counting started. Tests only."""

def _drain_retired() -> tuple[
    list[tuple[str, str | None, tuple[int, int, int, int, int], list[int], int]], int
]:
    """The dropped primitives since the last call per (kind, name): ``(kind, name, counters,
    histogram counts, histogram sum in ns)``; and how many were discarded (``max_keys``)."""

_ScrapeRow = tuple[
    str,
    str,
    int,
    int,
    float,
    tuple[int, int, int] | None,
    tuple[int | None, int] | None,
    tuple[int, int, int, int, int],
    list[int],
    float,
]
"""``(kind, label, primitives, waiters, oldest_wait, (in_use, limit, high_water) or None,
(tokens_available, tokens_capacity) or None, counters, wait counts, wait sum in seconds)``."""

@final
class Scrape:
    """The series of one scrape, summed per (kind, label): filled by ``read`` and
    ``add_retired``, then read by ``rows`` or ``render`` (after which it takes no more)."""

    def __new__(cls, unnamed: str, expected: int = 0) -> Scrape:
        """``expected``: about how many series (room is made for them at once)."""
    def read(self, objs: list[Any]) -> None:
        """Adds the figures of each primitive in ``objs`` (other objects are skipped)."""
    def is_live(self, kind: str, label: str) -> bool: ...
    def add_retired(
        self,
        kind: str,
        label: str,
        counters: tuple[int, int, int, int, int],
        counts: list[int],
        sum_ns: int,
    ) -> None: ...
    def sort(self) -> None:
        """Sorts the series (without the GIL); it takes no more figures after."""
    def __len__(self) -> int: ...
    def rows(self, start: int = 0, stop: int | None = None) -> list[_ScrapeRow]:
        """The series ``start`` to ``stop``, sorted by kind and label."""
    def render(
        self,
        field: str,
        name: str,
        start: int,
        budget: int,
        live_only: bool = False,
        label: str = "",
        values: list[str] = ...,
    ) -> tuple[bytes, int]:
        """The text lines of one family from series ``start`` on, about ``budget`` bytes:
        ``(bytes, next start)``."""

_WaitHistogram = tuple[list[float], list[int], float]

@final
class ManualClock:
    """A clock that moves only when told to, for deterministic tests."""

    def __new__(cls, start: float = 0.0) -> ManualClock: ...
    def now(self) -> float:
        """Current time in seconds."""
    def now_ns(self) -> int:
        """Current time in nanoseconds."""
    def advance(self, seconds: float) -> float:
        """Moves time forward by ``seconds`` (>= 0); returns the new time in seconds."""

@final
class LoopClock:
    """The running event loop's clock (asyncio ``loop.time()``, ``trio.current_time()``).

    Pass it as ``clock=`` to limiters used under fake loop time (trio's autojump MockClock,
    asyncio loop-time mocks): waits then follow the loop's virtual time. Opt-in: each
    decision calls into Python, and it works only inside a running loop.
    """

    def __new__(cls) -> LoopClock: ...
    def now(self) -> float:
        """Current loop time in seconds."""

@final
class Decision:
    """What a limiter would decide for a request now. Returned by ``peek()``."""

    allowed: bool
    remaining: int
    retry_after: float
    reset_after: float
    def __new__(
        cls, allowed: bool, remaining: int, retry_after: float, reset_after: float
    ) -> Decision: ...
    def __bool__(self) -> bool: ...

# TokenBucket and SlidingWindow share their methods natively (one macro of pymethods,
# rust/py/src/rate.rs), among them the private reservation protocol of the waiting paths
# (`_enqueue` ... `_counters`; the Python side names the pair `_rate_wait.RateLimiter`).
# Each class lists them in full: stubtest checks only what a stub class defines itself, so a
# shared stub-only base would leave them unchecked.

@disjoint_base
class TokenBucket:
    def __new__(
        cls,
        rate: float,
        per: float = 1.0,
        burst: int | None = None,
        *,
        clock: ManualClock | LoopClock | None = None,
        name: str | None = None,
    ) -> Self: ...
    def try_acquire(self, cost: int = 1) -> bool:
        """Admits ``cost`` tokens now if the bucket holds them; never waits."""
    def peek(self, cost: int = 1) -> Decision:
        """What ``try_acquire(cost)`` would decide now, without consuming anything."""
    def acquire(
        self, cost: int = 1, timeout: float | str | None = None
    ) -> Coroutine[Any, Any, None]:
        """An `Acquire`: takes nothing until awaited; then immediate admission completes
        without suspending (asyncio), and every acquisition is a checkpoint on trio."""
    def __aenter__(self) -> Awaitable[None]: ...
    def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> Awaitable[None]: ...
    def _enqueue(
        self,
        cost: int,
        timeout: float | None,
        waker: Callable[[], object],
        admit_now: bool = True,
    ) -> RateTicket | None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None: ...
    def _try_take(self, cost: int) -> bool: ...
    def _poll(self) -> None: ...
    def _status(self, ticket: RateTicket) -> tuple[str, float]: ...
    def _consume(self, ticket: RateTicket) -> bool: ...
    def _withdraw(self, ticket: RateTicket, timed_out: bool = False) -> str: ...
    def _take(self, cost: int) -> tuple[int, int] | None: ...
    def _untake(self, cost: int, record: int, taken_at: int) -> None: ...
    def _commit(self, cost: int, waited: float | None = None) -> None: ...
    def _wait_histogram(self) -> _WaitHistogram: ...
    @property
    def waiting(self) -> int: ...
    def _oldest_wait(self) -> float: ...
    def _count(self, outcome: _Refusal) -> None: ...
    def _counters(self) -> tuple[int, int, int, int, int]: ...
    def _charge(self, cost: int) -> None: ...
    def _resettle(self, reserved: int, actual: int) -> None: ...
    def _pause(self, seconds: float) -> None: ...
    def _sync(self, remaining: int, reset_after: float | None = None) -> None: ...
    @property
    def rate(self) -> float: ...
    @property
    def per(self) -> float: ...
    @property
    def burst(self) -> int: ...
    @property
    def name(self) -> str | None: ...
    @property
    def clock(self) -> ManualClock | None: ...
    @property
    def _clock_kind(self) -> Literal["monotonic", "manual", "loop"]: ...
    @property
    def emission_interval(self) -> float:
        """Seconds per token, as used internally (rounded up to whole nanoseconds)."""

@disjoint_base
class SlidingWindow:
    def __new__(
        cls,
        limit: int,
        window: float,
        *,
        clock: ManualClock | LoopClock | None = None,
        name: str | None = None,
    ) -> Self: ...
    def try_acquire(self, cost: int = 1) -> bool:
        """Admits ``cost`` now if it fits in the window; never waits."""
    def peek(self, cost: int = 1) -> Decision:
        """What ``try_acquire(cost)`` would decide now, without consuming anything."""
    def acquire(
        self, cost: int = 1, timeout: float | str | None = None
    ) -> Coroutine[Any, Any, None]:
        """An `Acquire`: takes nothing until awaited; then immediate admission completes
        without suspending (asyncio), and every acquisition is a checkpoint on trio."""
    def __aenter__(self) -> Awaitable[None]: ...
    def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> Awaitable[None]: ...
    def _enqueue(
        self,
        cost: int,
        timeout: float | None,
        waker: Callable[[], object],
        admit_now: bool = True,
    ) -> RateTicket | None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None: ...
    def _try_take(self, cost: int) -> bool: ...
    def _poll(self) -> None: ...
    def _status(self, ticket: RateTicket) -> tuple[str, float]: ...
    def _consume(self, ticket: RateTicket) -> bool: ...
    def _withdraw(self, ticket: RateTicket, timed_out: bool = False) -> str: ...
    def _take(self, cost: int) -> tuple[int, int] | None: ...
    def _untake(self, cost: int, record: int, taken_at: int) -> None: ...
    def _commit(self, cost: int, waited: float | None = None) -> None: ...
    def _wait_histogram(self) -> _WaitHistogram: ...
    @property
    def waiting(self) -> int: ...
    def _oldest_wait(self) -> float: ...
    def _count(self, outcome: _Refusal) -> None: ...
    def _counters(self) -> tuple[int, int, int, int, int]: ...
    def _charge(self, cost: int) -> None: ...
    def _resettle(self, reserved: int, actual: int) -> None: ...
    def _pause(self, seconds: float) -> None: ...
    def _sync(self, remaining: int, reset_after: float | None = None) -> None: ...
    def _log_len(self) -> int: ...
    @property
    def limit(self) -> int: ...
    @property
    def window(self) -> float: ...
    @property
    def name(self) -> str | None: ...
    @property
    def clock(self) -> ManualClock | None: ...
    @property
    def _clock_kind(self) -> Literal["monotonic", "manual", "loop"]: ...

_Refusal = Literal["rejected", "timed_out", "cancelled"]

@disjoint_base
class AllOf:
    def __new__(cls, *limiters: TokenBucket | SlidingWindow) -> Self: ...
    @property
    def limiters(self) -> tuple[TokenBucket | SlidingWindow, ...]: ...
    def try_acquire(self, costs: Sequence[int] | None = None) -> bool:
        """Admits now in every limiter, or in none (a refusal charges none); never waits."""
    def _try_take(self, costs: Sequence[int] | None = None) -> bool: ...
    def acquire(
        self, costs: Sequence[int] | None = None, timeout: float | str | None = None
    ) -> Coroutine[Any, Any, None]:
        """Waits until every limiter admits its cost (FIFO in each); all or nothing. An
        `Acquire`: takes nothing until awaited."""
    def __aenter__(self) -> Awaitable[None]: ...

@disjoint_base
class CircuitBreaker:
    """Native circuit breaker; the public class is `admission.CircuitBreaker`."""

    def __new__(
        cls,
        *,
        failure_rate: float,
        window_calls: int | None,
        window_seconds: float | None,
        min_calls: int,
        slow_call_duration: float | None,
        slow_call_rate: float,
        open_for: float,
        open_for_max: float,
        half_open_calls: int,
        failure_on: tuple[type[BaseException], ...],
        ignore: tuple[type[BaseException], ...],
        clock: ManualClock | LoopClock | None = None,
        name: str | None = None,
    ) -> Self: ...
    def try_acquire(self) -> bool: ...
    def record(self, ok: bool, duration: float) -> None: ...
    def release(self) -> None: ...
    def reset(self) -> None: ...
    def _call(self) -> BreakerCall: ...
    def __enter__(self) -> None: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool: ...
    def __aenter__(self) -> Awaitable[None]: ...
    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> Awaitable[None]: ...
    @property
    def state(self) -> Literal["closed", "open", "half_open"]: ...
    @property
    def retry_after(self) -> float: ...
    @property
    def name(self) -> str | None: ...
    @property
    def clock(self) -> ManualClock | None: ...
    @property
    def _clock_kind(self) -> str: ...
    @property
    def failure_rate(self) -> float: ...
    @property
    def slow_call_rate(self) -> float: ...
    @property
    def slow_call_duration(self) -> float | None: ...
    @property
    def window(self) -> int | float: ...
    @property
    def min_calls(self) -> int: ...
    @property
    def open_for(self) -> float: ...
    @property
    def open_for_max(self) -> float: ...
    @property
    def half_open_calls(self) -> int: ...
    @property
    def failure_on(self) -> tuple[type[BaseException], ...]: ...
    @property
    def ignore(self) -> tuple[type[BaseException], ...]: ...
    def _counts(self) -> tuple[int, int, int, int, int, int, int]: ...
    def _window(self) -> tuple[int, int, int]: ...
    def _probes(self) -> tuple[int, int]: ...
    def _transitioned(self, old: str, new: str, open_for: float) -> None: ...

@final
class BreakerCall:
    """One call permitted by a `CircuitBreaker`, ended exactly once."""

    def end(self, exc: BaseException | None = None) -> None: ...
    def fail(self) -> None: ...
    def release(self) -> None: ...
    @property
    def probe(self) -> bool: ...

@final
class BreakerFunction:
    """A function decorated with a `CircuitBreaker` (what ``@breaker`` returns): each call
    goes through the breaker. Called through CPython's vectorcall protocol; binds as a
    method; ``is_async``: each call returns a `BreakerAwaitable`. ``vectorcall=False`` (a test
    hook) leaves calls to ``__call__``."""

    def __new__(
        cls,
        breaker: CircuitBreaker,
        func: Callable[..., Any],
        failure_if: Callable[[Any], object] | None,
        is_async: bool,
        *,
        vectorcall: bool = True,
    ) -> BreakerFunction: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __reduce__(self) -> str: ...
    def __get__(self, instance: object, owner: type | None = None, /) -> Any: ...
    @property
    def breaker(self) -> CircuitBreaker: ...
    __dict__: dict[str, Any]

@final
class BreakerAwaitable:
    """One call of a decorated coroutine function: takes the permit at its first step, then
    calls the function and forwards ``send``, ``throw`` and ``close`` to its awaitable.
    Registered as a ``collections.abc.Coroutine``. Not constructible from Python."""

    def __await__(self) -> Generator[Any, Any, Any]: ...
    def __next__(self) -> Any: ...
    def send(self, value: object) -> Any: ...
    def throw(self, typ: object, val: object = None, tb: object = None) -> Any: ...
    def close(self) -> None: ...

@final
class RateTicket:
    """A request waiting in a rate limiter's queue."""

    @property
    def cost(self) -> int: ...
    @property
    def _grant(self) -> tuple[int, int] | None: ...

@final
class Reservation:
    """Costs admitted at an estimate; `settle` them at what was really used (the public
    class is `admission.Reservation`: see `admission.reserve`)."""

    def __new__(
        cls,
        parts: Iterable[tuple[TokenBucket | SlidingWindow, int, tuple[int, int]]],
        primary: int | None = None,
    ) -> Self: ...
    @property
    def reserved(self) -> tuple[int, ...]:
        """The costs admitted, one per limiter."""
    @property
    def settled(self) -> tuple[int, ...] | None:
        """The costs it was settled at, or None if it has not been. (A part whose clock
        could not be read keeps its reserved cost: what it stands at.)"""
    def settle(self, actual: int | None = None, *, costs: Sequence[int] | None = None) -> None:
        """Settles at the real cost: ``settle(actual)`` for one limiter (and for
        ``manager.limit(name, tokens=n)``: its tokens), ``settle(costs=(...))`` with one cost
        per limiter for an `all_of`. The unused part goes back (waiters first); an overage
        is charged as a debt. Once only: a second call raises `RuntimeError`.

        Raises:
            TypeError / ValueError: a cost that is not an int >= 0, or the wrong number of
                costs.
            RuntimeError: settled already.
        """
    def refund(self) -> None:
        """Settles at zero: everything goes back (the call never used the limits)."""

def take_now(
    limiters: Iterable[TokenBucket | SlidingWindow],
    costs: Iterable[int],
    primary: int | None = None,
) -> Reservation | None:
    """The reservation of ``costs`` if every limiter admits its cost now (nobody waits, it
    fits), else None with nothing taken nor counted. ``primary``: the limiter
    ``settle(actual)`` settles (None: settled with ``costs=``)."""

_Outcome = Literal["waiting", "granted", "closed", "cancelled", "too_large"]

@final
class Ready:
    """An already-completed awaitable: the result of an immediate admission."""

    def __await__(self) -> Generator[None]: ...
    def __iter__(self) -> Ready: ...
    def __next__(self) -> None: ...
    def send(self, value: object) -> None: ...

@final
class Acquire:
    """What ``acquire()`` returns: an acquisition that takes nothing until it runs.

    Its first step decides (``await``, or a Task's first ``send`` when it is the Task's
    coroutine): admitted at once without suspending on asyncio, queued otherwise; on trio a
    checkpoint either way. Registered as a ``collections.abc.Coroutine``, so
    ``asyncio.create_task(s.acquire())`` works. Not constructible from Python."""

    def __await__(self) -> Generator[Any]: ...
    def __next__(self) -> Any: ...
    def send(self, value: object) -> Any: ...
    def throw(self, typ: object, val: object = None, tb: object = None) -> Any: ...
    def close(self) -> None: ...
    @property
    def __qualname__(self) -> str: ...
    @property
    def __name__(self) -> str: ...

@final
class Waiter:
    """A waiting asyncio acquisition of semaphore permits: the awaitable ``acquire()``
    returns when no permit is free. Queued when first awaited; the task blocks on it (it
    follows the asyncio future protocol). Not constructible from Python."""

    _asyncio_future_blocking: bool | None
    def __await__(self) -> Generator[Any]: ...
    def __iter__(self) -> Waiter: ...
    def __next__(self) -> Any: ...
    def send(self, value: object) -> Any: ...
    def throw(self, typ: object, val: object = None, tb: object = None) -> None: ...
    def close(self) -> None: ...
    _loop: Any
    def add_done_callback(
        self, func: Callable[[Waiter], object], *, context: Context | None = None
    ) -> None: ...
    def remove_done_callback(self, func: Callable[[Waiter], object]) -> int: ...
    def cancel(self, msg: object = None) -> bool: ...
    def cancelled(self) -> bool: ...
    def done(self) -> bool: ...
    def result(self) -> None: ...
    def exception(self) -> BaseException | None: ...
    def __call__(self) -> None:
        """Same as ``result()`` (the Task's C-string lookup of ``result`` finds the waiter)."""

@final
class Deadlines:
    """The timeouts of one semaphore's waiters on one event loop, on one loop timer."""

    def __call__(self) -> None: ...

@final
class WakeBatch:
    """Done-callbacks of native waiters, run in one turn of an event loop."""

    def __call__(self) -> None: ...

@final
class Ticket:
    """A queued request for permits."""

    @property
    def n(self) -> int: ...
    @property
    def outcome(self) -> _Outcome: ...

@disjoint_base
class Semaphore:
    def __new__(cls, limit: int, *, name: str | None = None) -> Self: ...
    def try_acquire(self, n: int = 1) -> bool:
        """Takes ``n`` permits if free and nobody is waiting; never waits."""
    def release(self, n: int = 1) -> None:
        """Gives back ``n`` permits; the longest waiter gets them first."""
    def acquire(self, n: int = 1, timeout: float | str | None = None) -> Coroutine[Any, Any, None]:
        """An `Acquire`: takes nothing until awaited; then immediate admission completes
        without suspending (asyncio), and every acquisition is a checkpoint on trio."""
    def __aenter__(self) -> Awaitable[None]: ...
    def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> Awaitable[None]: ...
    def _try_take(self, n: int) -> bool: ...
    def _reject(self) -> None: ...
    def locked(self) -> bool:
        """True when acquiring one permit would have to wait: none is free, or someone is
        queued (newcomers never pass a waiter). False once closed."""
    def __enter__(self) -> Self:
        """Takes a free permit at once, or waits in this thread (``acquire_blocking(1)``)."""
    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None: ...
    def _acquire_now(self, n: int, timeout: float | str | None = None) -> Awaitable[None]: ...
    def _enqueue(self, n: int, waker: Callable[[], object]) -> Ticket | None: ...
    def _cancel(self, ticket: Ticket, timed_out: bool = False) -> _Outcome: ...
    def _commit(self, ticket: Ticket) -> None: ...
    def _pass_on(self, ticket: Ticket, timed_out: bool = False) -> None: ...
    def close(self) -> None:
        """Refuses new requests and wakes every waiter with ``Closed``."""
    @property
    def closed(self) -> bool: ...
    @property
    def limit(self) -> int: ...
    @limit.setter
    def limit(self, value: int) -> None: ...
    @property
    def in_use(self) -> int: ...
    @property
    def available(self) -> int: ...
    @property
    def waiting(self) -> int: ...
    @property
    def high_water(self) -> int: ...
    @property
    def name(self) -> str | None: ...
    def _counters(self) -> tuple[int, int, int, int, int]: ...
    def _wait_histogram(self) -> _WaitHistogram: ...
    def _oldest_wait(self) -> float: ...

@disjoint_base
class SharedSegment:
    def __new__(cls, path: str, capacity: int, mode: int) -> Self: ...
    @property
    def path(self) -> str:
        """The segment's file."""
    @property
    def capacity(self) -> int:
        """How many limiters the segment can hold (fixed when it was created)."""
    def _limiters(
        self,
    ) -> list[
        tuple[str, str, list[float], tuple[int, int, int, int, int], int, tuple[int, int]]
    ]: ...
    def _table_paths(self) -> list[str]: ...

@disjoint_base
class SharedTokenBucket:
    def __new__(
        cls,
        store: SharedSegment,
        name: str,
        rate: float,
        per: float,
        burst: int | None = None,
    ) -> Self: ...
    def try_acquire(self, cost: int = 1) -> bool:
        """Admits ``cost`` now if it fits (in every process sharing the bucket); never waits."""
    def peek(self, cost: int = 1) -> Decision:
        """What ``try_acquire(cost)`` would decide now, without consuming anything."""
    def _try_take(self, cost: int) -> bool: ...
    def _reserve(self, cost: int, max_wait: float | None) -> tuple[float, int] | None: ...
    def _until(self, tat: int) -> float: ...
    def _commit(self, cost: int) -> None: ...
    def _untake(self, tat: int, cost: int) -> bool: ...
    def _gave_up(self, timed_out: bool) -> None: ...
    def _counters(self) -> tuple[int, int, int, int, int]: ...
    @property
    def name(self) -> str: ...
    @property
    def rate(self) -> float: ...
    @property
    def per(self) -> float: ...
    @property
    def burst(self) -> int: ...
    @property
    def emission_interval(self) -> float:
        """Seconds per token, as used internally (rounded up to whole nanoseconds)."""

@disjoint_base
class SharedSemaphore:
    def __new__(cls, store: SharedSegment, name: str, limit: int) -> Self: ...
    def try_acquire(self, n: int = 1) -> bool:
        """Takes ``n`` permits now if they are free (in every process sharing it)."""
    def release(self, n: int = 1) -> None:
        """Gives back ``n`` permits held by this process, waking waiters in every process."""
    def _try_take(self, n: int) -> bool: ...
    def _wait(self, n: int, timeout: float | None) -> bool: ...
    def _reclaim(self) -> int: ...
    def _gave_up(self, timed_out: bool) -> None: ...
    def _counters(self) -> tuple[int, int, int, int, int]: ...
    @property
    def name(self) -> str: ...
    @property
    def limit(self) -> int:
        """The limit, fixed when the semaphore was created in the segment."""
    @property
    def in_use(self) -> int:
        """Permits held now, by every process."""
    @property
    def available(self) -> int:
        """Permits free now."""
    @property
    def held(self) -> int:
        """Permits held now by this process."""
    @property
    def high_water(self) -> int:
        """The most permits ever held at once, by every process."""

@disjoint_base
class SharedKeyedTokenBucket:
    def __new__(
        cls,
        store: SharedSegment,
        name: str,
        rate: float,
        per: float,
        burst: int | None = None,
        max_keys: int = 1000000,
    ) -> Self: ...
    def try_acquire(self, key: str | bytes | int, cost: int = 1) -> bool:
        """Admits ``cost`` for ``key`` now if it fits (in every process sharing the bucket);
        never waits. A new key that finds no room is refused."""
    def peek(self, key: str | bytes | int, cost: int = 1) -> Decision:
        """What ``try_acquire(key, cost)`` would decide now, without consuming anything."""
    def _try_take(self, key: str | bytes | int, cost: int) -> int: ...
    def _try_acquire_at(self, key: str | bytes | int, cost: int, now_ns: int) -> int: ...
    def _peek_at(self, key: str | bytes | int, cost: int, now_ns: int) -> Decision: ...
    def _len_at(self, now_ns: int) -> int: ...
    def _gave_up(self, timed_out: bool) -> None: ...
    def _counters(self) -> tuple[int, int, int, int, int, int, int]: ...
    def __len__(self) -> int:
        """Keys whose bucket is not full now, in every process (a scan of the whole table)."""
    @property
    def name(self) -> str: ...
    @property
    def rate(self) -> float: ...
    @property
    def per(self) -> float: ...
    @property
    def burst(self) -> int: ...
    @property
    def max_keys(self) -> int:
        """Keys whose buckets are not full that the table holds (fixed when it was created)."""
    @property
    def capacity(self) -> int:
        """Slots of the table (twice ``max_keys``, a power of two; 32 bytes each)."""
    @property
    def emission_interval(self) -> float:
        """Seconds per token, as used internally (rounded up to whole nanoseconds)."""

# The keyed limiters (rust/py/src/keyed.rs): the methods all three share come from one macro
# of pymethods; each class lists them in full (see the note above TokenBucket).

_KeyedCounts = tuple[int, int, int, int, int, int, int, int]

@disjoint_base
class KeyedTokenBucket:
    def __new__(
        cls,
        rate: float,
        per: float = 1.0,
        burst: int | None = None,
        *,
        max_keys: int = 1000000,
        idle_ttl: float = 600.0,
        shards: int | None = None,
        clock: ManualClock | LoopClock | None = None,
        name: str | None = None,
    ) -> Self: ...
    def try_acquire(self, key: str | bytes | int, cost: int = 1) -> bool:
        """Admits ``cost`` for ``key`` now, or refuses now; never waits."""
    def _try_take(self, key: str | bytes | int, cost: int) -> bool: ...
    def peek(self, key: str | bytes | int, cost: int = 1) -> Decision:
        """What ``try_acquire(key, cost)`` would decide now; consumes nothing."""
    def _lend(self, key: str | bytes | int) -> int: ...
    def _give_back(self, key: str | bytes | int) -> None: ...
    @property
    def rate(self) -> float: ...
    @property
    def per(self) -> float: ...
    @property
    def burst(self) -> int: ...
    def __len__(self) -> int:
        """Keys held now (keys past ``idle_ttl`` are removed first)."""
    def sweep(self) -> int:
        """Removes the keys unused for ``idle_ttl`` whose state is at rest; returns how many."""
    @property
    def max_keys(self) -> int: ...
    @property
    def idle_ttl(self) -> float: ...
    @property
    def shards(self) -> int: ...
    @property
    def name(self) -> str | None: ...
    @property
    def clock(self) -> ManualClock | None: ...
    @property
    def _clock_kind(self) -> Literal["monotonic", "manual", "loop"]: ...
    def _counts(self) -> _KeyedCounts: ...
    def _absorb(
        self, admitted: int, admitted_cost: int, rejected: int, timed_out: int, cancelled: int
    ) -> None: ...
    @property
    def _kind(self) -> str: ...

@disjoint_base
class KeyedSlidingWindow:
    def __new__(
        cls,
        limit: int,
        window: float,
        *,
        max_keys: int = 1000000,
        idle_ttl: float = 600.0,
        shards: int | None = None,
        clock: ManualClock | LoopClock | None = None,
        name: str | None = None,
    ) -> Self: ...
    def try_acquire(self, key: str | bytes | int, cost: int = 1) -> bool:
        """Admits ``cost`` for ``key`` now, or refuses now; never waits."""
    def _try_take(self, key: str | bytes | int, cost: int) -> bool: ...
    def peek(self, key: str | bytes | int, cost: int = 1) -> Decision:
        """What ``try_acquire(key, cost)`` would decide now; consumes nothing."""
    def _lend(self, key: str | bytes | int) -> int: ...
    def _give_back(self, key: str | bytes | int) -> None: ...
    @property
    def limit(self) -> int: ...
    @property
    def window(self) -> float: ...
    def __len__(self) -> int:
        """Keys held now (keys past ``idle_ttl`` are removed first)."""
    def sweep(self) -> int:
        """Removes the keys unused for ``idle_ttl`` whose state is at rest; returns how many."""
    @property
    def max_keys(self) -> int: ...
    @property
    def idle_ttl(self) -> float: ...
    @property
    def shards(self) -> int: ...
    @property
    def name(self) -> str | None: ...
    @property
    def clock(self) -> ManualClock | None: ...
    @property
    def _clock_kind(self) -> Literal["monotonic", "manual", "loop"]: ...
    def _counts(self) -> _KeyedCounts: ...
    def _absorb(
        self, admitted: int, admitted_cost: int, rejected: int, timed_out: int, cancelled: int
    ) -> None: ...
    @property
    def _kind(self) -> str: ...

@disjoint_base
class KeyedSemaphore:
    def __new__(
        cls,
        limit: int,
        *,
        max_keys: int = 1000000,
        idle_ttl: float = 600.0,
        shards: int | None = None,
        clock: ManualClock | LoopClock | None = None,
        name: str | None = None,
    ) -> Self: ...
    def try_acquire(self, key: str | bytes | int, n: int = 1) -> bool:
        """Takes ``n`` of ``key``'s permits now if they are free (and nobody waits for them)."""
    def _try_take(self, key: str | bytes | int, n: int) -> bool: ...
    def release(self, key: str | bytes | int, n: int = 1) -> None:
        """Gives back ``n`` of ``key``'s permits; more than it holds is a ``ValueError``."""
    def in_use(self, key: str | bytes | int) -> int:
        """Permits ``key`` holds now."""
    def _lend(self, key: str | bytes | int) -> int: ...
    def _give_back(self, key: str | bytes | int, held: int) -> None: ...
    @property
    def limit(self) -> int: ...
    def __len__(self) -> int:
        """Keys held now (keys past ``idle_ttl`` are removed first)."""
    def sweep(self) -> int:
        """Removes the keys unused for ``idle_ttl`` whose state is at rest; returns how many."""
    @property
    def max_keys(self) -> int: ...
    @property
    def idle_ttl(self) -> float: ...
    @property
    def shards(self) -> int: ...
    @property
    def name(self) -> str | None: ...
    @property
    def clock(self) -> ManualClock | None: ...
    @property
    def _clock_kind(self) -> Literal["monotonic", "manual", "loop"]: ...
    def _counts(self) -> _KeyedCounts: ...
    def _absorb(
        self, admitted: int, admitted_cost: int, rejected: int, timed_out: int, cancelled: int
    ) -> None: ...
    @property
    def _kind(self) -> str: ...

# -- the client layer's reading (admission.presets) ------------------------------------------

def read_quotas(
    pairs: Iterable[tuple[bytes | str, bytes | str]],
    vendor: str,
    wall: float | None = None,
) -> list[tuple[bool, int, int | None, float | None]]:
    """The rate-limit quotas (name, value) ``pairs`` state: ``(tokens?, remaining, limit,
    reset_after)`` each (see `admission.presets.HostLimits.read_headers`)."""

def estimate_tokens(body: bytes, default_max_tokens: int) -> int | None:
    """A request's estimated tokens from its JSON ``body``, or None: not sure (ask Python)."""

def usage_tokens(body: bytes) -> tuple[bool, int | None]:
    """``(True, tokens or None)`` an answer's ``body`` states, or ``(False, None)``: not sure."""

def sync_quotas(
    pairs: Iterable[tuple[bytes | str, bytes | str]],
    vendor: str,
    requests: TokenBucket | None,
    tokens: TokenBucket | None,
) -> None:
    """Syncs a host's buckets with the quotas (name, value) ``pairs`` state
    (`admission.httpx`)."""

@final
class TokenTally:
    """A transport host's tokens reserved and settled: atomic sums."""

    def __new__(cls) -> Self: ...
    def reserve(self, n: int) -> None:
        """Adds ``n`` tokens reserved."""
    def settle(self, n: int) -> None:
        """Adds ``n`` tokens settled."""
    def reserve_now(
        self, requests: TokenBucket | None, tokens_bucket: TokenBucket | None, tokens: int
    ) -> Reservation | None:
        """A transport host's reservation taken at once: one request in ``requests`` and
        ``tokens`` in ``tokens_bucket`` (each if the host has it; the tokens are the primary
        part), or None with nothing taken. Adds the tokens reserved when taken in a tokens
        bucket."""
    def settle_reservation(self, reservation: Reservation, tokens: int | None) -> None:
        """Settles the primary part of ``reservation`` (its tokens) at ``tokens``, or (None)
        at its estimate, which then stands; adds the tokens settled."""
    def read(self) -> tuple[int, int]:
        """``(reserved, settled)``."""
