"""Choosing a pool's SSL setting: safe by default, explicit settings always win.

``ssl="auto"`` (the default) decides from where the database is:

1. an explicit choice wins: ``PoolConfig.ssl`` other than ``"auto"``, ``sslmode`` in the DSN,
   or the ``PGSSLMODE`` environment variable (the driver reads the last two itself);
2. unix sockets (and the driver's default, a local socket): off, TLS adds nothing there;
3. a root certificate is configured (``ssl_root_cert``, ``sslrootcert`` in the DSN or
   ``PGSSLROOTCERT``): ``verify-full`` (chain and host name checked): whoever configured a
   CA wants it used, even through a local tunnel;
4. every host is loopback (``localhost``, ``127.0.0.0/8``, ``::1``): off;
5. otherwise ``require``: encrypted, though without a CA the server is not authenticated.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from admission.pools.dsn import ParsedDsn

__all__ = ["SSL_MODES", "SslChoice", "SslSetting", "choose_ssl"]

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
SslMode = Literal["auto", "disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
SslSetting = SslMode | bool | ssl.SSLContext

# What asyncpg's ``ssl=`` receives; ``None`` means "do not pass it" (the DSN/env decides).
_SslArg = str | bool | ssl.SSLContext | None


@dataclass(frozen=True, slots=True)
class SslChoice:
    """The SSL setting chosen for one pool and why; ``str()`` is the line that gets logged."""

    mode: str
    """``disable``, ``require``, ``verify-full``, ... or ``custom SSLContext``."""
    reason: str
    arg: _SslArg
    """The value for asyncpg's ``ssl=`` argument; ``None``: leave it to the DSN/environment."""

    def __str__(self) -> str:
        return f"ssl={self.mode} ({self.reason})"


def _is_unix_socket(host: str) -> bool:
    return host.startswith(("/", "@"))


def _is_loopback(host: str) -> bool:
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.partition("%")[0]).is_loopback
    except ValueError:
        return False


def _context(mode: str, cafile: str) -> ssl.SSLContext:
    """An SSLContext trusting ``cafile`` with libpq's meaning of ``mode``."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"ssl_root_cert {cafile!r} cannot be loaded: {exc}") from None
    # libpq: with a root certificate, require and verify-ca check the chain, not the name.
    context.check_hostname = mode == "verify-full"
    return context


def choose_ssl(
    setting: SslSetting,
    root_cert: str | None,
    dsn: ParsedDsn,
    environ: Mapping[str, str] | None = None,
) -> SslChoice:
    """Applies the rules of this module to one pool's configuration.

    >>> from admission.pools.dsn import parse_dsn
    >>> str(choose_ssl("auto", None, parse_dsn("postgresql://app@127.0.0.1/rag"), {}))
    'ssl=disable (auto: loopback host)'
    >>> str(choose_ssl("auto", None, parse_dsn("postgresql://app@db.internal/rag"), {}))
    'ssl=require (auto: non-loopback host db.internal, no root certificate configured)'
    >>> str(choose_ssl("auto", None, parse_dsn("postgresql://db.internal/x?sslmode=disable"), {}))
    'ssl=disable (explicit: sslmode in the DSN)'
    """
    env = os.environ if environ is None else environ
    if isinstance(setting, ssl.SSLContext):
        return SslChoice("custom SSLContext", "explicit: PoolConfig.ssl", setting)
    if isinstance(setting, bool):
        return SslChoice("require" if setting else "disable", "explicit: PoolConfig.ssl", setting)
    if setting != "auto":
        if root_cert is not None and setting in ("require", "verify-ca", "verify-full"):
            return SslChoice(setting, "explicit: PoolConfig.ssl", _context(setting, root_cert))
        return SslChoice(setting, "explicit: PoolConfig.ssl", setting)
    if "sslmode" in dsn.params:
        return SslChoice(dsn.params["sslmode"], "explicit: sslmode in the DSN", None)
    if env.get("PGSSLMODE"):
        return SslChoice(env["PGSSLMODE"], "explicit: PGSSLMODE", None)

    hosts = list(dsn.hosts) or [h for h in env.get("PGHOST", "").split(",") if h]
    if not hosts:
        return SslChoice("disable", "auto: the driver's default local socket", False)
    if all(_is_unix_socket(h) for h in hosts):
        return SslChoice("disable", "auto: unix socket", False)
    if root_cert is not None:
        return SslChoice(
            "verify-full", "auto: ssl_root_cert configured", _context("verify-full", root_cert)
        )
    for source, value in (
        ("sslrootcert in the DSN", dsn.params.get("sslrootcert")),
        ("PGSSLROOTCERT", env.get("PGSSLROOTCERT")),
    ):
        if value:
            # The driver loads that file itself for a mode given as a string.
            return SslChoice("verify-full", f"auto: {source} configured", "verify-full")
    remote = [h for h in hosts if not _is_unix_socket(h) and not _is_loopback(h)]
    if not remote:
        return SslChoice("disable", "auto: loopback host", False)
    return SslChoice(
        "require",
        f"auto: non-loopback host {remote[0]}, no root certificate configured",
        "require",
    )


def root_cert_path(value: str | os.PathLike[str] | None) -> str | None:
    """``ssl_root_cert`` as a string path (``~`` expanded), or ``None``."""
    return None if value is None else str(Path(value).expanduser())
