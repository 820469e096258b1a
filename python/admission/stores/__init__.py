"""Stores: where a limiter's state lives when it must be shared beyond one process.

``SharedMemory`` shares limiters between the processes of one host (workers of a web server,
a multiprocessing pool): pass it as ``store=`` to `admission.TokenBucket` or
`admission.Semaphore`. ``Redis`` (`admission.stores.redis`) shares them between hosts through
a Redis or Valkey server; it is imported on first use (it needs the ``redis`` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from admission.stores.network import NetworkStore, RateReply, SemaphoreReply
from admission.stores.shared_memory import (
    SharedLimiter,
    SharedMemory,
    SharedSemaphore,
    SharedTokenBucket,
)

if TYPE_CHECKING:
    from admission.stores.redis import Redis
else:

    def __getattr__(name: str) -> object:
        # Imported on first use: `import admission` stays as light as without it.
        if name == "Redis":
            from admission.stores.redis import Redis

            return Redis
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "NetworkStore",
    "RateReply",
    "Redis",
    "SemaphoreReply",
    "SharedLimiter",
    "SharedMemory",
    "SharedSemaphore",
    "SharedTokenBucket",
]
