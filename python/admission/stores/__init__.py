"""Stores: where a limiter's state lives when it must be shared beyond one process.

``SharedMemory`` shares limiters between the processes of one host (workers of a web server,
a multiprocessing pool); a network store (`NetworkStore`: PostgreSQL, Redis) between every
process of every host. Pass one as ``store=`` to `admission.TokenBucket`,
`admission.Semaphore` or (network stores) `admission.KeyedTokenBucket`. `MemoryStore` is the
network-store contract in this process's memory, for tests. ``Postgres`` needs asyncpg (the
``postgres`` extra) only when one is made.
"""

from __future__ import annotations

from admission.stores.memory import MemoryStore
from admission.stores.network import NetworkStore, RateReply, SemaphoreReply
from admission.stores.postgres import Postgres
from admission.stores.remote import (
    Lease,
    RemoteKeyedTokenBucket,
    RemoteSemaphore,
    RemoteTokenBucket,
)
from admission.stores.shared_memory import (
    SharedLimiter,
    SharedMemory,
    SharedSemaphore,
    SharedTokenBucket,
)

__all__ = [
    "Lease",
    "MemoryStore",
    "NetworkStore",
    "Postgres",
    "RateReply",
    "RemoteKeyedTokenBucket",
    "RemoteSemaphore",
    "RemoteTokenBucket",
    "SemaphoreReply",
    "SharedLimiter",
    "SharedMemory",
    "SharedSemaphore",
    "SharedTokenBucket",
]
