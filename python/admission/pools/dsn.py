"""Reading the parts of a PostgreSQL DSN the pool decides on, and hiding its secrets.

Only URL DSNs (``postgresql://user:password@host:port/db?param=value``) are accepted, as by
asyncpg; several hosts (``host1:5432,host2:5433``) and a unix-socket directory given as
``?host=/run/postgresql`` are understood.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

__all__ = ["ParsedDsn", "parse_dsn", "redact_dsn", "scrub"]

SCHEMES = ("postgresql", "postgres")
MASK = "***"
# Query parameters whose values are secrets.
_SECRET_PARAMS = frozenset({"password", "sslpassword"})
_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|sslpassword)=)[^&#]*")


@dataclass(frozen=True, slots=True)
class ParsedDsn:
    """What the pool needs from a DSN. Its repr never shows the secrets."""

    scheme: str
    hosts: tuple[str, ...]
    """Host names, IP addresses or unix-socket directories; empty means the driver's default."""
    params: dict[str, str]
    """Query parameters (``sslmode``, ``application_name``, ...), secrets included."""
    secrets: tuple[str, ...] = field(repr=False)
    """The password (userinfo or ``password=``) and ``sslpassword``, to scrub from messages."""


def _split(dsn: str) -> tuple[str, str, str, str]:
    """(scheme, userinfo, hosts, rest) of a URL DSN; rest starts at the path or the query.

    Not urllib's parser: it rejects several hosts and mis-splits passwords containing
    ``/``, ``#``, ``?`` that users leave unencoded. The userinfo ends at the last ``@``
    before the query, so an unencoded ``@`` or ``/`` in a password still counts as password.
    """
    scheme, sep, rest = dsn.partition("://")
    if not sep:
        return "", "", "", dsn
    query_at = rest.find("?")
    head = rest if query_at < 0 else rest[:query_at]
    tail = "" if query_at < 0 else rest[query_at:]
    at = head.rfind("@")
    userinfo, hostpart = ("", head) if at < 0 else (head[:at], head[at + 1 :])
    slash = hostpart.find("/")
    hosts, path = (hostpart, "") if slash < 0 else (hostpart[:slash], hostpart[slash:])
    return scheme, userinfo, hosts, path + tail


def redact_dsn(dsn: str) -> str:
    """The DSN with its password (in the userinfo or a ``password=`` parameter) masked.

    >>> redact_dsn("postgresql://app:s3cr%40t@db.internal:5432/rag?sslmode=require")
    'postgresql://app:***@db.internal:5432/rag?sslmode=require'
    >>> redact_dsn("postgres://app@h1,h2/rag?password=hunter2&application_name=x")
    'postgres://app@h1,h2/rag?password=***&application_name=x'
    """
    scheme, userinfo, hosts, rest = _split(dsn)
    if not scheme:
        # Not a URL: nothing can be told apart from a secret, so nothing is shown.
        return MASK
    user, colon, _password = userinfo.partition(":")
    if colon:
        userinfo = f"{user}:{MASK}"
    auth = f"{userinfo}@" if userinfo else ""
    rest = _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, rest)
    return f"{scheme}://{auth}{hosts}{rest}"


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every occurrence of each secret (raw and percent-decoded) masked.

    Defence in depth for messages built from driver errors, which could quote a DSN.

    >>> scrub("failed: postgresql://u:pw@h/db", ("pw",))
    'failed: postgresql://u:***@h/db'
    """
    for secret in secrets:
        for form in {secret, unquote(secret)}:
            if form:
                text = text.replace(form, MASK)
    return text


def _hosts(hostpart: str) -> list[str]:
    hosts = []
    for item in hostpart.split(","):
        item = unquote(item)
        if item.startswith("["):  # [::1]:5432
            hosts.append(item[1 : item.find("]")] if "]" in item else item[1:])
        elif item.count(":") == 1:
            hosts.append(item.partition(":")[0])
        else:
            hosts.append(item)
    return [h for h in hosts if h]


def parse_dsn(dsn: str) -> ParsedDsn:
    """Splits a URL DSN into the parts the pool decides on.

    Raises:
        ValueError: not a ``postgresql://`` or ``postgres://`` URL (the message shows the
            DSN redacted).

    >>> p = parse_dsn("postgresql://app:pw@[::1]:5432,db2/rag?sslmode=disable")
    >>> p.hosts, p.params, p.secrets
    (('::1', 'db2'), {'sslmode': 'disable'}, ('pw',))
    """
    scheme, userinfo, hostpart, rest = _split(dsn)
    if scheme.lower() not in SCHEMES:
        raise ValueError(
            f"dsn must be a URL starting with postgresql:// or postgres://, got {redact_dsn(dsn)!r}"
        )
    _user, colon, password = userinfo.partition(":")
    query = rest.partition("?")[2].partition("#")[0]
    params = dict(parse_qsl(query, keep_blank_values=True))
    hosts = _hosts(hostpart)
    if "host" in params:
        # libpq and asyncpg let the query override the authority (unix sockets live here).
        hosts = [h for h in params["host"].split(",") if h]
    secrets = [password] if colon and password else []
    secrets += [v for k, v in params.items() if k in _SECRET_PARAMS and v]
    return ParsedDsn(
        scheme=scheme,
        hosts=tuple(hosts),
        params={k: v for k, v in params.items() if k not in _SECRET_PARAMS},
        secrets=tuple(secrets),
    )
