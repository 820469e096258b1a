"""`PoolConfig`: everything about one pool, checked when it is built."""

from __future__ import annotations

import math
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from admission.pools.dsn import parse_dsn, redact_dsn
from admission.pools.tls import SSL_MODES, SslSetting

__all__ = ["PoolConfig"]

# Arguments of asyncpg.create_pool that PoolConfig owns: passing them in connect_kwargs too
# would make two sources of truth (and could bypass the bounds and the SSL choice).
_OWNED = frozenset(
    {
        "dsn",
        "min_size",
        "max_size",
        "timeout",
        "command_timeout",
        "ssl",
        "password",
        "server_settings",
        "init",
        "max_inactive_connection_lifetime",
        "loop",
    }
)


def _seconds(name: str, value: object, *, optional: bool, zero_ok: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "a number of seconds or None" if optional else "a number of seconds"
        raise TypeError(f"{name} must be {kind}, got {value!r}")
    seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0 or (seconds == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise ValueError(f"{name} must be a finite number of seconds {bound}, got {value!r}")
    return seconds


def _count(name: str, value: object, *, minimum: int, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """One database pool: where it connects, its bounds, and how it waits, heals and closes.

    >>> import admission as adm
    >>> cfg = adm.PoolConfig("postgresql://app:hunter2@db.internal/rag", min_size=5, max_size=20,
    ...                      acquire_timeout=10.0, max_waiters=1000)
    >>> cfg.max_size, cfg.redacted_dsn
    (20, 'postgresql://app:***@db.internal/rag')
    >>> "hunter2" in repr(cfg)
    False
    >>> adm.PoolConfig("postgresql://db/rag", min_size=30, max_size=20)
    Traceback (most recent call last):
    ValueError: min_size (30) must not exceed max_size (20)

    Attributes:
        dsn: ``postgresql://user:password@host:port/database?param=value``. Shown redacted.
        min_size, max_size: connections kept open at least / opened at most. ``max_size``
            is a hard bound: the server never sees more connections from this pool.
        acquire_timeout: seconds a caller waits for a free connection before `PoolTimeout`
            (``None``: no limit). Opening a connection is bounded by ``connect_timeout``.
        max_waiters: callers allowed to wait at once; the next fails at once with
            `PoolOverloaded` (``0``: never wait; ``None``: no bound).
        connect_timeout: seconds for opening one connection (TCP, TLS, authentication).
        command_timeout: default per-statement timeout passed to asyncpg (``None``: none).
        close_timeout: seconds a graceful close waits for connections in use before it
            terminates them.
        health_check_interval: if set, every so many seconds the idle connections run
            ``SELECT 1``; broken ones are replaced before a caller gets them.
        max_inactive_connection_lifetime: idle connections above ``min_size`` are closed
            after this many seconds (asyncpg's setting).
        reconnect_base, reconnect_cap: while the database is unreachable the pool probes
            it after ``uniform(0, min(cap, base * 2**attempt))`` seconds (full jitter).
        ssl: ``"auto"`` (see `admission.pools.tls`), a libpq ``sslmode`` string, a bool or
            an `ssl.SSLContext`. Explicit settings always win over ``"auto"``.
        ssl_root_cert: CA file; makes ``"auto"`` choose ``verify-full``.
        application_name: shown in ``pg_stat_activity``; defaults to ``admission:<pool>``
            unless the DSN or ``server_settings`` set one.
        password: overrides the DSN's; never shown.
        server_settings: run-time parameters for each connection (``search_path``, ...).
        init: ``async def init(conn)`` run once on each new connection (codecs, settings).
        connect_kwargs: any other `asyncpg.create_pool` argument (``statement_cache_size``).

    Raises:
        TypeError, ValueError: naming the argument and the value (passwords redacted).
    """

    dsn: str
    _: KW_ONLY
    min_size: int = 1
    max_size: int = 10
    acquire_timeout: float | None = 30.0
    max_waiters: int | None = 1000
    connect_timeout: float = 5.0
    command_timeout: float | None = None
    close_timeout: float = 10.0
    health_check_interval: float | None = None
    max_inactive_connection_lifetime: float = 300.0
    reconnect_base: float = 0.1
    reconnect_cap: float = 2.0
    ssl: SslSetting = "auto"
    ssl_root_cert: str | os.PathLike[str] | None = None
    application_name: str | None = None
    password: str | None = field(default=None, repr=False)
    server_settings: Mapping[str, str] | None = None
    init: Callable[[Any], Awaitable[None]] | None = None
    connect_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.dsn, str):
            raise TypeError(f"dsn must be a str (a postgresql:// URL), got {type(self.dsn)!r}")
        parse_dsn(self.dsn)  # raises ValueError showing the DSN redacted
        _count("min_size", self.min_size, minimum=0)
        _count("max_size", self.max_size, minimum=1)
        if self.min_size > self.max_size:
            raise ValueError(
                f"min_size ({self.min_size}) must not exceed max_size ({self.max_size})"
            )
        _count("max_waiters", self.max_waiters, minimum=0, optional=True)
        seconds = {
            "acquire_timeout": _seconds(
                "acquire_timeout", self.acquire_timeout, optional=True, zero_ok=True
            ),
            "connect_timeout": _seconds("connect_timeout", self.connect_timeout, optional=False),
            "command_timeout": _seconds("command_timeout", self.command_timeout, optional=True),
            "close_timeout": _seconds(
                "close_timeout", self.close_timeout, optional=False, zero_ok=True
            ),
            "health_check_interval": _seconds(
                "health_check_interval", self.health_check_interval, optional=True
            ),
            "max_inactive_connection_lifetime": _seconds(
                "max_inactive_connection_lifetime",
                self.max_inactive_connection_lifetime,
                optional=False,
                zero_ok=True,
            ),
            "reconnect_base": _seconds("reconnect_base", self.reconnect_base, optional=False),
            "reconnect_cap": _seconds("reconnect_cap", self.reconnect_cap, optional=False),
        }
        for name, value in seconds.items():
            object.__setattr__(self, name, value)  # ints become floats
        if self.reconnect_cap < self.reconnect_base:
            raise ValueError(
                f"reconnect_cap ({self.reconnect_cap!r}) must be >= reconnect_base "
                f"({self.reconnect_base!r})"
            )
        self._check_ssl()
        for name in ("application_name", "password"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                shown = "***" if name == "password" else repr(value)
                raise TypeError(f"{name} must be a str or None, got {shown}")
        if self.init is not None and not callable(self.init):
            raise TypeError(f"init must be an async callable or None, got {self.init!r}")
        if self.server_settings is not None and not isinstance(self.server_settings, Mapping):
            raise TypeError(f"server_settings must be a mapping, got {self.server_settings!r}")
        if not isinstance(self.connect_kwargs, Mapping):
            raise TypeError(f"connect_kwargs must be a mapping, got {self.connect_kwargs!r}")
        clash = sorted(_OWNED.intersection(self.connect_kwargs))
        if clash:
            raise ValueError(
                f"connect_kwargs may not set {', '.join(clash)}: use the PoolConfig field "
                "of that name (connect_timeout for timeout)"
            )

    def _check_ssl(self) -> None:
        ssl_setting: object = self.ssl
        if not isinstance(ssl_setting, (bool, ssl.SSLContext)) and (
            ssl_setting != "auto" and ssl_setting not in SSL_MODES
        ):
            modes = ", ".join(("auto", *SSL_MODES))
            raise ValueError(
                f"ssl must be one of {modes}, a bool or an ssl.SSLContext, got {ssl_setting!r}"
            )
        root = self.ssl_root_cert
        if root is not None and not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"ssl_root_cert must be a path or None, got {root!r}")

    @property
    def redacted_dsn(self) -> str:
        """The DSN with its password masked: the only form admission ever shows."""
        return redact_dsn(self.dsn)

    def __repr__(self) -> str:
        return (
            f"PoolConfig({self.redacted_dsn!r}, min_size={self.min_size}, "
            f"max_size={self.max_size}, acquire_timeout={self.acquire_timeout!r}, "
            f"max_waiters={self.max_waiters!r}, ssl={self.ssl!r})"
        )
