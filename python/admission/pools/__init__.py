"""PostgreSQL connection pools (asyncpg) behind admission control: `PoolManager`.

Needs the ``postgres`` extra (``pip install 'admission[postgres]'``); asyncpg is imported
only when a manager opens.

Modules: `config` (`PoolConfig`), `manager` (`PoolManager`), `stats` (snapshots),
`errors`, `dsn` (parsing and redaction), `tls` (the automatic SSL choice), `metrics` (the
``admission_pool_*`` Prometheus families of every open pool), `settings` (``[pools.NAME]``
tables of a `ConcurrencyManager` configuration file).
"""

from __future__ import annotations

from admission.pools.config import PoolConfig
from admission.pools.errors import (
    PoolClosed,
    PoolConnectError,
    PoolConnectionLost,
    PoolError,
    PoolOverloaded,
    PoolServerFull,
    PoolTimeout,
    PoolUnavailable,
    UnknownPool,
)
from admission.pools.manager import PoolManager
from admission.pools.stats import PoolCheck, PoolStats, Readiness

__all__ = [
    "PoolCheck",
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
    "Readiness",
    "UnknownPool",
]
