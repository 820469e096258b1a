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

from admission import alerts, metrics, policies, testing
from admission._native import MAX_PERMITS, Decision, LoopClock
from admission.combine import AllOf, all_of
from admission.concurrency import Semaphore
from admission.config import Config
from admission.durations import Rate, parse_duration, parse_rate
from admission.errors import (
    AcquireTimeout,
    AdmissionError,
    CapacityError,
    Closed,
    ConfigError,
    PortInUseError,
    RateLimited,
    UnknownLimit,
)
from admission.gather import gather, map
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
    PoolStats,
    PoolTimeout,
    PoolUnavailable,
    UnknownPool,
)
from admission.rate import SlidingWindow, TokenBucket
from admission.retry import Attempt, Retry, RetryStats
from admission.retry_budget import RetryBudget, RetryBudgetStats
from admission.stats import LimiterStats, SemaphoreStats, WaitHistogram
from admission.taskpool import TaskPool
from admission.threads import to_thread

__version__ = "0.1.0"

__all__ = [
    "MAX_PERMITS",
    "AcquireTimeout",
    "AdmissionError",
    "AllOf",
    "Attempt",
    "CapacityError",
    "Closed",
    "ConcurrencyManager",
    "Config",
    "ConfigError",
    "Decision",
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
    "PoolStats",
    "PoolTimeout",
    "PoolUnavailable",
    "PortInUseError",
    "Rate",
    "RateLimited",
    "Retry",
    "RetryBudget",
    "RetryBudgetStats",
    "RetryStats",
    "Semaphore",
    "SemaphoreStats",
    "SlidingWindow",
    "TaskPool",
    "TokenBucket",
    "UnknownLimit",
    "UnknownPool",
    "WaitHistogram",
    "alerts",
    "all_of",
    "gather",
    "map",
    "metrics",
    "parse_duration",
    "parse_rate",
    "policies",
    "testing",
    "to_thread",
]
