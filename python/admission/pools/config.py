"""`PoolConfig`: everything about one pool, checked when it is built."""

from __future__ import annotations

import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Any

from admission._validate import duration_seconds, nonnegative_int, positive_int
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


_NO_KWARGS: Mapping[str, Any] = MappingProxyType({})


def _check_ssl(setting: object, root: object) -> None:
    if not isinstance(setting, (bool, ssl.SSLContext)) and (
        setting != "auto" and setting not in SSL_MODES
    ):
        modes = ", ".join(("auto", *SSL_MODES))
        raise ValueError(
            f"ssl must be one of {modes}, a bool or an ssl.SSLContext, got {setting!r}"
        )
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"ssl_root_cert must be a path or None, got {root!r}")


def _optional_seconds(
    value: float | str | None, arg: str, *, positive: bool = False
) -> float | None:
    return None if value is None else duration_seconds(value, arg, positive=positive)


@dataclass(frozen=True, slots=True, init=False)
class PoolConfig:
    """One database pool: where it connects, its bounds, and how it waits, heals and closes.

    >>> import admission as adm
    >>> cfg = adm.PoolConfig("postgresql://app:hunter2@db.internal/rag", min_size=5, max_size=20,
    ...                      acquire_timeout="10s", connect_timeout="2.5s", max_waiters=1000)
    >>> cfg.max_size, cfg.redacted_dsn, cfg.acquire_timeout, cfg.connect_timeout
    (20, 'postgresql://app:***@db.internal/rag', 10.0, 2.5)
    >>> "hunter2" in repr(cfg)
    False
    >>> adm.PoolConfig("postgresql://db/rag", min_size=30, max_size=20)
    Traceback (most recent call last):
    ValueError: min_size (30) must not exceed max_size (20)
    >>> adm.PoolConfig("postgresql://db/rag", connect_timeout="0s")
    Traceback (most recent call last):
    ValueError: connect_timeout must be a finite number of seconds > 0, got '0s'

    Every duration (the ``*_timeout`` settings, ``health_check_interval``,
    ``max_inactive_connection_lifetime``, ``reconnect_base``, ``reconnect_cap``) takes a
    number of seconds or a duration string (``"10s"``, ``"250ms"``, ``"1m"``, see
    `admission.durations`) and is stored as a float number of seconds: finite, >= 0, and
    > 0 where 0 would make no sense (``connect_timeout``, ``command_timeout``,
    ``health_check_interval``, ``reconnect_base``, ``reconnect_cap``).

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
        TypeError, ValueError: naming the argument and the value (passwords redacted); a
            duration string that does not parse raises `admission.ConfigError` (a
            `ValueError`), as everywhere else in admission.
    """

    # The stored values: durations in seconds (floats) whatever form they were given in.
    dsn: str
    min_size: int
    max_size: int
    acquire_timeout: float | None
    max_waiters: int | None
    connect_timeout: float
    command_timeout: float | None
    close_timeout: float
    health_check_interval: float | None
    max_inactive_connection_lifetime: float
    reconnect_base: float
    reconnect_cap: float
    ssl: SslSetting
    ssl_root_cert: str | os.PathLike[str] | None
    application_name: str | None
    password: str | None = field(repr=False)
    server_settings: Mapping[str, str] | None
    init: Callable[[Any], Awaitable[None]] | None
    connect_kwargs: Mapping[str, Any]

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        acquire_timeout: float | str | None = 30.0,
        max_waiters: int | None = 1000,
        connect_timeout: float | str = 5.0,
        command_timeout: float | str | None = None,
        close_timeout: float | str = 10.0,
        health_check_interval: float | str | None = None,
        max_inactive_connection_lifetime: float | str = 300.0,
        reconnect_base: float | str = 0.1,
        reconnect_cap: float | str = 2.0,
        ssl: SslSetting = "auto",
        ssl_root_cert: str | os.PathLike[str] | None = None,
        application_name: str | None = None,
        password: str | None = None,
        server_settings: Mapping[str, str] | None = None,
        init: Callable[[Any], Awaitable[None]] | None = None,
        connect_kwargs: Mapping[str, Any] = _NO_KWARGS,
    ) -> None:
        set_field = partial(object.__setattr__, self)  # frozen: each field is set once, here
        if not isinstance(dsn, str):
            raise TypeError(f"dsn must be a str (a postgresql:// URL), got {type(dsn)!r}")
        parse_dsn(dsn)  # raises ValueError showing the DSN redacted
        set_field("dsn", dsn)
        set_field("min_size", nonnegative_int(min_size, "min_size"))
        set_field("max_size", positive_int(max_size, "max_size"))
        if min_size > max_size:
            raise ValueError(f"min_size ({min_size}) must not exceed max_size ({max_size})")
        if max_waiters is not None:
            nonnegative_int(max_waiters, "max_waiters")
        set_field("max_waiters", max_waiters)
        set_field("acquire_timeout", _optional_seconds(acquire_timeout, "acquire_timeout"))
        set_field(
            "connect_timeout", duration_seconds(connect_timeout, "connect_timeout", positive=True)
        )
        set_field(
            "command_timeout",
            _optional_seconds(command_timeout, "command_timeout", positive=True),
        )
        set_field("close_timeout", duration_seconds(close_timeout, "close_timeout"))
        set_field(
            "health_check_interval",
            _optional_seconds(health_check_interval, "health_check_interval", positive=True),
        )
        set_field(
            "max_inactive_connection_lifetime",
            duration_seconds(max_inactive_connection_lifetime, "max_inactive_connection_lifetime"),
        )
        base = duration_seconds(reconnect_base, "reconnect_base", positive=True)
        cap = duration_seconds(reconnect_cap, "reconnect_cap", positive=True)
        if cap < base:
            raise ValueError(
                f"reconnect_cap ({reconnect_cap!r}) must be >= reconnect_base ({reconnect_base!r})"
            )
        set_field("reconnect_base", base)
        set_field("reconnect_cap", cap)
        _check_ssl(ssl, ssl_root_cert)
        set_field("ssl", ssl)
        set_field("ssl_root_cert", ssl_root_cert)
        strings: tuple[tuple[str, object], ...] = (
            ("application_name", application_name),
            ("password", password),
        )
        for name, value in strings:
            if value is not None and not isinstance(value, str):
                shown = "***" if name == "password" else repr(value)
                raise TypeError(f"{name} must be a str or None, got {shown}")
            set_field(name, value)
        if init is not None and not callable(init):
            raise TypeError(f"init must be an async callable or None, got {init!r}")
        set_field("init", init)
        if server_settings is not None and not isinstance(server_settings, Mapping):
            raise TypeError(f"server_settings must be a mapping, got {server_settings!r}")
        set_field("server_settings", server_settings)
        if not isinstance(connect_kwargs, Mapping):
            raise TypeError(f"connect_kwargs must be a mapping, got {connect_kwargs!r}")
        clash = sorted(_OWNED.intersection(connect_kwargs))
        if clash:
            raise ValueError(
                f"connect_kwargs may not set {', '.join(clash)}: use the PoolConfig field "
                "of that name (connect_timeout for timeout)"
            )
        set_field("connect_kwargs", connect_kwargs)

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
