"""Stores: where a limiter's state lives when it must be shared beyond one process.

``SharedMemory`` shares limiters between the processes of one host (workers of a web server,
a multiprocessing pool): pass it as ``store=`` to `admission.TokenBucket` or
`admission.Semaphore`. ``Postgres`` shares them between hosts through a PostgreSQL database
(a `NetworkStore`: one round trip per decision, the server's clock; needs asyncpg, the
``postgres`` extra, only when one is made).
"""

from __future__ import annotations

from admission.stores.network import NetworkStore, RateReply, SemaphoreReply
from admission.stores.postgres import Postgres
from admission.stores.shared_memory import (
    SharedLimiter,
    SharedMemory,
    SharedSemaphore,
    SharedTokenBucket,
)

__all__ = [
    "NetworkStore",
    "Postgres",
    "RateReply",
    "SemaphoreReply",
    "SharedLimiter",
    "SharedMemory",
    "SharedSemaphore",
    "SharedTokenBucket",
]
