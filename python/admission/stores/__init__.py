"""Stores: where a limiter's state lives when it must be shared beyond one process.

``SharedMemory`` shares limiters between the processes of one host (workers of a web server,
a multiprocessing pool): pass it as ``store=`` to `admission.TokenBucket` or
`admission.Semaphore`.
"""

from __future__ import annotations

from admission.stores.network import NetworkStore, RateReply, SemaphoreReply
from admission.stores.shared_memory import (
    SharedLimiter,
    SharedMemory,
    SharedSemaphore,
    SharedTokenBucket,
)

__all__ = [
    "NetworkStore",
    "RateReply",
    "SemaphoreReply",
    "SharedLimiter",
    "SharedMemory",
    "SharedSemaphore",
    "SharedTokenBucket",
]
