"""admission: fast, correct admission control for Python services.

Rate limits, bounded concurrency and their accounting, decided in Rust in nanoseconds.

>>> import admission as adm
>>> rpm = adm.TokenBucket(rate=60, per=60.0, burst=10)   # 60 per minute, bursts of 10
>>> llm = adm.Semaphore(10, name="llm")                  # at most 10 calls in flight
>>> if rpm.try_acquire():
...     with llm:
...         pass  # call the API
>>> rpm.stats().admitted
1
"""

from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING

# `admission.audit` is pure Python and must import where the extension is not built (a
# pre-commit hook in a fresh environment): without it, the package imports and every other
# name raises the ImportError that says why.
try:
    _importlib.import_module("admission._native")
except ImportError as _error:
    _NATIVE_ERROR: ImportError | None = _error
else:
    _NATIVE_ERROR = None

if TYPE_CHECKING or _NATIVE_ERROR is None:
    from admission import alerts, metrics, policies, presets, stores, testing
    from admission._native import MAX_PERMITS, Decision, LoopClock
    from admission.breaker import BreakerStats, CircuitBreaker
    from admission.combine import AllOf, all_of
    from admission.concurrency import Semaphore
    from admission.config import Config
    from admission.durations import Rate, parse_duration, parse_rate
    from admission.errors import (
        AcquireTimeout,
        AdmissionError,
        CapacityError,
        CircuitOpen,
        Closed,
        ConfigError,
        PortInUseError,
        StoreUnavailable,
        UnknownLimit,
    )
    from admission.gather import gather

    # `adm.map`, but not in __all__: `from admission import *` must not shadow the builtin.
    from admission.gather import map as map
    from admission.keyed import (
        KeyedSemaphore,
        KeyedSlidingWindow,
        KeyedStats,
        KeyedTokenBucket,
        TooManyKeys,
    )
    from admission.manager import ConcurrencyManager, LimitStats
    from admission.policies import Policy
    from admission.pools import (
        PoolClosed,
        PoolConfig,
        PoolConnectError,
        PoolConnectionLost,
        PoolError,
        PoolManager,
        PoolOverloaded,
        PoolServerFull,
        PoolStats,
        PoolTimeout,
        PoolUnavailable,
        UnknownPool,
    )
    from admission.rate import SlidingWindow, TokenBucket
    from admission.reserve import Reservation, Reserve
    from admission.retry import Attempt, Retry, RetryStats
    from admission.retry_budget import RetryBudget, RetryBudgetStats
    from admission.stats import LimiterStats, SemaphoreStats, WaitHistogram
    from admission.taskpool import TaskPool
    from admission.threads import to_thread

if TYPE_CHECKING:
    # Imported on first use at run time (it needs httpx, an optional dependency).
    from admission import httpx as httpx

    __version__: str
    """The installed version (``"0.1.0"``), from the package metadata: maturin writes it from
    ``Cargo.toml``, the one place the version is kept."""
else:

    def __getattr__(name: str) -> str:
        # Read on first use: importing importlib.metadata would add a fifth to `import admission`.
        if name == "httpx" and _NATIVE_ERROR is None:
            # The transports need httpx, an optional dependency: imported on first use.
            return _importlib.import_module("admission.httpx")
        if name == "__version__":
            from importlib.metadata import PackageNotFoundError, version

            try:
                found = version("admission")
            except PackageNotFoundError:  # pragma: no cover - a source tree never installed
                found = "0+unknown"
            globals()["__version__"] = found
            return found
        if _NATIVE_ERROR is not None:
            raise ImportError(
                f"admission.{name} needs the native extension admission._native, which did not "
                f"import ({_NATIVE_ERROR}): install the wheel for this platform, or build it in "
                "a clone with `make develop`. Only admission.audit works without it."
            ) from _NATIVE_ERROR
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MAX_PERMITS",
    "AcquireTimeout",
    "AdmissionError",
    "AllOf",
    "Attempt",
    "BreakerStats",
    "CapacityError",
    "CircuitBreaker",
    "CircuitOpen",
    "Closed",
    "ConcurrencyManager",
    "Config",
    "ConfigError",
    "Decision",
    "KeyedSemaphore",
    "KeyedSlidingWindow",
    "KeyedStats",
    "KeyedTokenBucket",
    "LimitStats",
    "LimiterStats",
    "LoopClock",
    "Policy",
    "PoolClosed",
    "PoolConfig",
    "PoolConnectError",
    "PoolConnectionLost",
    "PoolError",
    "PoolManager",
    "PoolOverloaded",
    "PoolServerFull",
    "PoolStats",
    "PoolTimeout",
    "PoolUnavailable",
    "PortInUseError",
    "Rate",
    "Reservation",
    "Reserve",
    "Retry",
    "RetryBudget",
    "RetryBudgetStats",
    "RetryStats",
    "Semaphore",
    "SemaphoreStats",
    "SlidingWindow",
    "StoreUnavailable",
    "TaskPool",
    "TokenBucket",
    "TooManyKeys",
    "UnknownLimit",
    "UnknownPool",
    "WaitHistogram",
    "alerts",
    "all_of",
    "gather",
    "metrics",
    "parse_duration",
    "parse_rate",
    "policies",
    "presets",
    "stores",
    "testing",
    "to_thread",
]
