"""Stores: where a limiter's state lives when it must be shared beyond one process.

``SharedMemory`` shares limiters between the processes of one host (workers of a web server,
a multiprocessing pool); a network store (`NetworkStore`: PostgreSQL, Redis) between every
process of every host. Pass one as ``store=`` to `admission.TokenBucket`,
`admission.Semaphore` or `admission.KeyedTokenBucket`. `MemoryStore` is the
network-store contract in this process's memory, for tests. ``Redis``
(`admission.stores.redis`) is imported on first use (it needs the ``redis`` extra);
``Postgres`` needs asyncpg (the ``postgres`` extra) only when one is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from admission.stores.memory import MemoryStore
from admission.stores.network import BatchContended, NetworkStore, RateReply, SemaphoreReply
from admission.stores.postgres import Postgres
from admission.stores.remote import (
    Lease,
    RemoteKeyedTokenBucket,
    RemoteSemaphore,
    RemoteTokenBucket,
)
from admission.stores.shared_memory import (
    SharedKeyedTokenBucket,
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
    "BatchContended",
    "Lease",
    "MemoryStore",
    "NetworkStore",
    "Postgres",
    "RateReply",
    "Redis",
    "RemoteKeyedTokenBucket",
    "RemoteSemaphore",
    "RemoteTokenBucket",
    "SemaphoreReply",
    "SharedKeyedTokenBucket",
    "SharedLimiter",
    "SharedMemory",
    "SharedSemaphore",
    "SharedTokenBucket",
]
