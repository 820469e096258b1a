"""Parsing a PostgreSQL DSN as asyncpg does, and showing it without its secrets.

Only URL DSNs (``postgresql://user:password@host:port/db?param=value``) are accepted, as by
asyncpg. `parse_dsn` follows asyncpg's own rules (``asyncpg.connect_utils``), so what the pool
decides on (the hosts for the automatic SSL choice) and what it masks is what the driver will
use:

- the URL is split by `urllib.parse.urlparse`: the authority ends at the first ``/``, ``?``
  or ``#``; the userinfo ends at the *first* ``@`` of the authority, the user at its first
  ``:``; user, password, hosts and database are percent-decoded;
- several hosts: ``h1:5432,h2:5433``; IPv6 addresses in brackets, ``[::1]:5432``; a host
  starting with ``/`` (or ``%2F``) is a unix-socket directory;
- the query is decoded by `urllib.parse.parse_qs` (keys too: ``pass%77ord`` *is*
  ``password``; the last value of a repeated key wins; a field without ``=`` is an error);
  ``host=`` and ``port=`` apply only when the authority names no host.

Stricter than asyncpg, because each of these is how a password with an unencoded reserved
character reads, and asyncpg would silently take part of it for something else (a host, a
port, a database, a query parameter): a ``#`` anywhere (asyncpg ignores a fragment), any
``@`` but the one ending the userinfo (also in the query: ``?user=a%40b``). These DSNs, and
every one asyncpg itself would refuse, raise a `ValueError` that shows the DSN redacted.

The password (userinfo or any spelling of a ``password``/``sslpassword`` query key) is never
shown: `ParsedDsn.redacted` is rendered from the parsed parts with it replaced by ``***``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, unquote_plus, urlparse

__all__ = ["ParsedDsn", "parse_dsn", "redact_dsn", "scrub"]

SCHEMES = ("postgresql", "postgres")
MASK = "***"
_IPV6 = re.compile(r"\[([^\]]+)\](?::([0-9]+))?")  # what asyncpg matches (a prefix match)
# What an unparseable DSN may show of a part: nothing that could be a piece of a password.
_SAFE_USER = re.compile(r"[A-Za-z0-9._~%+-]*")
_SAFE_HOSTS = re.compile(r"[A-Za-z0-9._~%\[\]:,-]*")
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._~%+/-]*")
# The query keys asyncpg reads itself (and application_name); any other is a server setting.
_DRIVER_KEYS = frozenset(
    {
        "host", "port", "dbname", "database", "user", "passfile", "service", "sslmode",
        "sslcert", "sslkey", "sslrootcert", "sslnegotiation", "sslcrl",
        "ssl_min_protocol_version", "ssl_max_protocol_version", "target_session_attrs",
        "krbsrvname", "gsslib", "application_name",
    }
)  # fmt: skip
_NOT_A_URL = "it is not a URL starting with postgresql:// or postgres://"
_AT = "it has an unencoded '@' outside the user:password@ separator"
_BAD_PORT = "it has a port that is not a number"
_HINT = (
    "percent-encode the reserved characters of the user and password "
    "(@ %40, : %3A, / %2F, ? %3F, # %23, % %25, [ %5B, ] %5D)"
)


def _is_secret_key(key: str) -> bool:
    """``password``, ``sslpassword`` and any other key naming a password, in any case."""
    return "password" in key.lower()


@dataclass(frozen=True, slots=True)
class ParsedDsn:
    """A DSN as asyncpg reads it. Its repr never shows the secrets."""

    scheme: str
    user: str | None
    """The user in the DSN (userinfo, else ``user=``), decoded; ``None``: not given."""
    hosts: tuple[str, ...]
    """Host names, IP addresses or unix-socket directories, decoded; empty: not given (the
    driver then uses ``PGHOST`` or its defaults)."""
    ports: tuple[int | None, ...]
    """One per host: the port given for it, or ``None`` (``PGPORT`` or 5432)."""
    database: str | None
    """The database (path, else ``dbname=``/``database=``), decoded; ``None``: not given."""
    params: dict[str, str] = field(repr=False)
    """Query parameters, decoded, last value of a repeated key; secrets left out (not in the
    repr: what follows a password with an unencoded ``&`` could be the rest of it)."""
    redacted: str
    """The DSN as given, with every password replaced by ``***``."""
    secrets: tuple[str, ...] = field(repr=False)
    """Every password in the DSN, raw and decoded, to scrub from driver messages."""


class _Refused(Exception):
    """Internal: why a DSN cannot be parsed (the reason never quotes the DSN)."""


def _hostlist(
    spec: str, ports: list[int] | None, *, decode: bool
) -> tuple[list[str], list[int | None]]:
    """asyncpg's ``_parse_hostlist``: ``h1:p1,[v6]:p2,/socket`` into hosts and ports."""
    hosts: list[str] = []
    found: list[int | None] = []
    for item in spec.split(","):
        if not item:
            raise _Refused("it has an empty host in its host list")
        if item.startswith("/"):
            addr, port = item, ""
        elif item.startswith("["):
            match = _IPV6.match(item)
            if match is None:
                raise _Refused("it has an invalid [IPv6] host")
            addr, port = match.group(1), match.group(2) or ""
        else:
            addr, _, port = item.partition(":")
        if decode:
            addr, port = unquote(addr), unquote(port)
        hosts.append(addr)
        if port and ports is None:  # given ports win, as in asyncpg
            try:
                found.append(int(port))
            except ValueError:
                raise _Refused(_BAD_PORT) from None
        else:
            found.append(None)
    if ports is not None:  # ``port=`` in the query: one for all hosts, or one per host
        if len(ports) > 1 and len(ports) != len(hosts):
            raise _Refused(f"it gives {len(ports)} ports for {len(hosts)} hosts")
        given: list[int | None] = list(ports)
        found = given * len(hosts) if len(given) == 1 else given
    return hosts, found


def _parse(dsn: str) -> ParsedDsn:
    scheme, sep, _ = dsn.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise _Refused(_NOT_A_URL)
    if "#" in dsn:
        raise _Refused("it has an unencoded '#' (asyncpg would ignore what follows it)")
    try:
        url = urlparse(dsn)
    except ValueError:
        raise _Refused(
            "it is not a valid URL (brackets, or characters Unicode turns into separators)"
        ) from None
    auth, at, hostspec = url.netloc.partition("@")
    if not at:
        auth, hostspec = "", url.netloc
    if "@" in hostspec or "@" in url.path or "@" in url.query:
        raise _Refused(_AT)
    raw_user, colon, raw_password = auth.partition(":")
    secrets = [raw_password, unquote(raw_password)] if colon and raw_password else []
    shown_auth = f"{raw_user}:{MASK}@" if colon else (f"{raw_user}@" if at else "")

    fields: list[tuple[str, str]] = []
    shown_query: list[str] = []
    if url.query:
        try:
            fields = parse_qsl(url.query, strict_parsing=True)
        except ValueError:
            raise _Refused("it has a query field without '=' (or an empty one)") from None
        after_secret = False
        for raw in url.query.split("&"):
            raw_key, _, raw_value = raw.partition("=")
            key = unquote_plus(raw_key)
            if _is_secret_key(key):
                secrets += [raw_value, unquote_plus(raw_value)]
                raw = f"{raw_key}={MASK}"
                after_secret = True
            elif after_secret and key not in _DRIVER_KEYS:
                # Could be the rest of a password with an unencoded "&": hidden whole.
                raw = MASK
            shown_query.append(raw)
    params = {k: v for k, v in fields if not _is_secret_key(k)}

    hosts: list[str] = []
    ports: list[int | None] = []
    if hostspec:
        hosts, ports = _hostlist(hostspec, None, decode=True)
    else:  # host= and port= count only when the authority names no host
        query_ports = None
        if params.get("port"):
            try:
                query_ports = [int(p) for p in params["port"].split(",")]
            except ValueError:
                raise _Refused(_BAD_PORT) from None
        if params.get("host"):
            hosts, ports = _hostlist(params["host"], query_ports, decode=False)
    user = unquote(raw_user) if raw_user else params.get("user")
    database: str | None
    if url.path:
        database = unquote(url.path[1:] if url.path.startswith("/") else url.path)
    else:
        database = params["dbname"] if "dbname" in params else params.get("database")
    redacted = f"{url.scheme}://{shown_auth}{hostspec}{url.path}"
    if url.query:
        redacted += "?" + "&".join(shown_query)
    return ParsedDsn(
        scheme=url.scheme,
        user=user,
        hosts=tuple(hosts),
        ports=tuple(ports),
        database=database,
        params=params,
        redacted=redacted,
        secrets=tuple(s for s in dict.fromkeys(secrets) if s),
    )


def _redact_unparsed(dsn: str) -> str:
    """A DSN that does not parse, showing only what cannot be part of a password.

    The userinfo is taken to end at the *last* ``@`` (whatever a password holds, it is
    before that), unless a query naming a password starts before it (then that ``@`` may
    be inside the password, and nothing after it is shown); the query is never shown; a
    part that is not plainly a user name, a host list or a path is masked.
    """
    scheme, sep, rest = dsn.partition("://")
    if not sep or not scheme.isalpha():
        return MASK
    at = rest.rfind("@")
    auth = ""
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, _ = userinfo.partition(":")
        shown = user if _SAFE_USER.fullmatch(user) else MASK
        auth = f"{shown}:{MASK}@" if colon else f"{shown}@"
        query = userinfo.partition("?")[2]
        if "password" in unquote_plus(query).lower():
            return f"{scheme}://{auth}{MASK}"
    end = len(rest)
    for char in "/?#":
        found = rest.find(char)
        if 0 <= found < end:
            end = found
    hosts, rest = rest[:end], rest[end:]
    shown_hosts = hosts if _SAFE_HOSTS.fullmatch(hosts) else MASK
    path_end = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    path, rest = rest[:path_end], rest[path_end:]
    shown_path = path if not path or _SAFE_PATH.fullmatch(path) else "/" + MASK
    tail = f"{rest[0]}{MASK}" if rest else ""
    return f"{scheme}://{auth}{shown_hosts}{shown_path}{tail}"


def redact_dsn(dsn: str) -> str:
    """The DSN with every password (userinfo, ``password=`` in any spelling) masked.

    >>> redact_dsn("postgresql://app:s3cr%40t@db.internal:5432/rag?sslmode=require")
    'postgresql://app:***@db.internal:5432/rag?sslmode=require'
    >>> redact_dsn("postgres://app@h1,h2/rag?pass%77ord=hunter2&application_name=x")
    'postgres://app@h1,h2/rag?pass%77ord=***&application_name=x'
    >>> redact_dsn("postgresql://app:pa?ss@db.internal/rag")  # not a DSN asyncpg can use
    'postgresql://app:***@db.internal/rag'
    """
    try:
        return _parse(dsn).redacted
    except _Refused:
        return _redact_unparsed(dsn)


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every occurrence of each secret (raw and percent-decoded) masked.

    Defence in depth for messages built from driver errors, which could quote a DSN.

    >>> scrub("failed: postgresql://u:pw@h/db", ("pw",))
    'failed: postgresql://u:***@h/db'
    """
    for secret in sorted(secrets, key=len, reverse=True):
        for form in {secret, unquote(secret)}:
            if form:
                text = text.replace(form, MASK)
    return text


def parse_dsn(dsn: str) -> ParsedDsn:
    """Parses a URL DSN by asyncpg's rules (see the module's documentation).

    Raises:
        ValueError: a DSN asyncpg would refuse or misread; the message says why and shows
            the DSN redacted (it has no ``__cause__`` or ``__context__`` either).

    >>> p = parse_dsn("postgresql://app:pw@[::1]:5432,db2/rag?sslmode=disable")
    >>> p.hosts, p.ports, p.user, p.database, p.params, p.secrets
    (('::1', 'db2'), (5432, None), 'app', 'rag', {'sslmode': 'disable'}, ('pw',))
    >>> parse_dsn("postgresql://app:pa#ss@db/rag")
    Traceback (most recent call last):
    ValueError: dsn 'postgresql://app:***@db/rag' cannot be used: it has an unencoded '#' ...
    """
    try:
        return _parse(dsn)
    except _Refused as refused:
        reason = str(refused)
    # Raised outside the handler: no context that could quote the DSN.
    shown = _redact_unparsed(dsn)
    if reason == _NOT_A_URL:
        raise ValueError(
            f"dsn must be a URL starting with postgresql:// or postgres://, got {shown!r}"
        )
    raise ValueError(f"dsn {shown!r} cannot be used: {reason}; {_HINT}")
