"""The exceptions admission raises on purpose. Catch `AdmissionError` for all of them."""

from __future__ import annotations

__all__ = ["AcquireTimeout", "AdmissionError", "CapacityError", "Closed", "RateLimited"]


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


class RateLimited(AdmissionError):
    """A request refused by a rate limit; ``retry_after`` is the seconds until it would fit."""

    def __init__(self, retry_after: float, message: str | None = None) -> None:
        super().__init__(message or f"rate limited: retry after {retry_after:.3f} s")
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[type[RateLimited], tuple[float, str]]:
        return (type(self), (self.retry_after, str(self)))


class Closed(AdmissionError):
    """The primitive was closed: it admits nothing new. Permits already held stay valid."""


class AcquireTimeout(AdmissionError, TimeoutError):
    """An acquisition that could not complete within its timeout.

    ``needed`` is the wait, in seconds, admission would have needed when it was known up front
    (rate limits know it exactly and fail at once instead of sleeping until the deadline);
    ``None`` when it depended on other holders (semaphores).
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
