"""Issue 12: no password ever shows, whatever the DSN (hostile table), and the DSN is read
as asyncpg reads it (asyncpg's own parser is the oracle); a real login through a DSN with a
URL-hostile password.

The table needs no server (connections are refused on a closed port, a missing socket);
the last tests use the module's PostgreSQL (``pg``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import traceback
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import asyncpg  # type: ignore[import-untyped]
import pytest
from asyncpg.connect_utils import (  # type: ignore[import-untyped]
    _parse_connect_dsn_and_args,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from postgres import APP_USER, DATABASE, PostgresServer

import admission as adm
from admission.pools.dsn import parse_dsn, redact_dsn
from admission.pools.tls import choose_ssl

# The password's two halves are distinctive: a leak of either half is caught too.
HEAD, TAIL = "Alpha7x", "Omega9z"
RESERVED = ":/?#[]@!$&'()*+,;=% "


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PORT = closed_port()
PORT2 = closed_port()


def hostile_table() -> Iterator[tuple[str, str]]:
    """(DSN, password) pairs: every reserved character in the user and the password, encoded
    and not, in the userinfo and the query, with IPv4, IPv6, several hosts, unix sockets."""
    hosts = (
        f"127.0.0.1:{PORT}",
        f"[::1]:{PORT}",
        f"127.0.0.1:{PORT},[::1]:{PORT2}",
        f"localhost:{PORT},127.0.0.1",
        "%2Fnonexistent%2Fsockets",
    )
    for i, char in enumerate(RESERVED):
        password = f"{HEAD}{char}{TAIL}"
        user = f"us{char}er"
        host = hosts[i % len(hosts)]
        yield f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{host}/db", password
        yield f"postgresql://app:{password}@{host}/db", password
        yield f"postgres://{user}:{password}@{host}/db?sslmode=disable", password
        yield f"postgresql://{user}:{quote(password, safe='')}@{host}/db", password
        yield f"postgresql://app@{host}/db?password={quote_plus(password)}", password
        yield f"postgresql://app@{host}/db?application_name=x&password={password}", password
        yield f"postgresql://{host}/db?user=app&pass%77ord={quote_plus(password)}", password
        yield f"postgresql://app@{host}/db?%70assword={password}&sslmode=disable", password
        yield f"postgresql://app@{host}/db?sslpassword={quote(password, safe='')}", password
        yield f"postgresql://app@{host}/db?PASSWORD={quote(password, safe='')}", password
        yield (
            f"postgresql:///db?host=/nonexistent/sockets&port={PORT}"
            f"&password={quote_plus(password)}",
            password,
        )
        yield f"postgresql://app:{quote(password)}@/db?host=/nonexistent/sockets", password
    # Issue 12's own three.
    yield f"postgresql://app:pa?{HEAD}@127.0.0.1:{PORT}/db", f"pa?{HEAD}"
    yield f"postgresql://app:x@127.0.0.1:{PORT}/db?pass%77ord={HEAD}", HEAD
    yield f"postgresql://app:{HEAD}#{TAIL}@127.0.0.1:{PORT}/db", f"{HEAD}#{TAIL}"
    yield f"postgresql://app:{HEAD}/{TAIL}@127.0.0.1:{PORT}/db", f"{HEAD}/{TAIL}"
    # Passwords that look like a port, and a repeated key (asyncpg takes the last).
    yield f"postgresql://app:1234/{HEAD}@127.0.0.1:{PORT}/db", f"1234/{HEAD}"
    yield f"postgresql://app:1234?a={HEAD}@127.0.0.1:{PORT}/db", f"1234?a={HEAD}"
    yield f"postgresql://app@127.0.0.1:{PORT}/db?password={HEAD}&password={TAIL}", HEAD + TAIL
    yield f"postgresql://app:{HEAD}%zz{TAIL}@127.0.0.1:{PORT}/db", f"{HEAD}%zz{TAIL}"
    yield f"postgresql://app:{HEAD}%41{TAIL}@127.0.0.1:{PORT}/db", f"{HEAD}A{TAIL}"
    yield f"postgresql://app:{HEAD}\uff03{TAIL}@127.0.0.1:{PORT}/db", f"{HEAD}\uff03{TAIL}"
    yield f"postgresql://app:{HEAD}@[::1/db", HEAD
    yield f"mysql://app:{HEAD}@127.0.0.1/db", HEAD
    yield f"app:{HEAD}@127.0.0.1/db", HEAD


TABLE = list(hostile_table())


def forms(dsn: str, password: str) -> tuple[str, ...]:
    """The password as it may leak: whole, encoded, decoded, and its distinctive halves."""
    whole = (password, quote(password, safe=""), quote_plus(password), quote(password))
    halves = tuple(h for h in (HEAD, TAIL) if h in password)
    return tuple(dict.fromkeys(whole + halves))


def oracle(dsn: str) -> tuple[list[Any], Any]:
    """asyncpg's own reading of ``dsn`` (its private parser)."""
    return _parse_connect_dsn_and_args(  # type: ignore[no-any-return]
        dsn=dsn,
        host=None,
        port=None,
        user=None,
        password=None,
        passfile=None,
        database=None,
        ssl=None,
        service=None,
        servicefile=None,
        direct_tls=None,
        server_settings=None,
        target_session_attrs=None,
        krbsrvname=None,
        gsslib=None,
    )


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for key in ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGSSLMODE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    monkeypatch.setenv("PGSERVICEFILE", str(tmp_path / "no-service"))


def assert_clean(text: str, dsn: str, password: str) -> None:
    for form in forms(dsn, password):
        assert form not in text, (dsn, form, text)


def test_the_table_is_hostile() -> None:
    assert len(TABLE) > 200
    accepted = refused = 0
    for dsn, _ in TABLE:
        try:
            parse_dsn(dsn)
            accepted += 1
        except ValueError:
            refused += 1
    assert accepted > 100
    assert refused > 30


@pytest.mark.parametrize(("dsn", "password"), TABLE)
def test_no_password_anywhere(
    dsn: str, password: str, caplog: pytest.LogCaptureFixture, clean_env: None
) -> None:
    caplog.set_level(logging.DEBUG)
    shown: list[str] = [redact_dsn(dsn)]
    settings: dict[str, Any] = {"min_size": 1, "max_size": 2, "acquire_timeout": 0.5}
    try:
        parse_dsn(dsn)
    except ValueError:
        refused = True
    else:
        refused = False
    if refused:
        # Refused: a clear error, showing the DSN redacted, with nothing chained.
        with pytest.raises(ValueError, match=r"^dsn (must be a URL|'.*' cannot be used)") as info:
            adm.PoolConfig(dsn, **settings)
        error = info.value
        assert error.__cause__ is None
        assert error.__context__ is None
        shown += [str(error), "".join(traceback.format_exception(error))]
        for text in shown:
            assert_clean(text, dsn, password)
        return

    config = adm.PoolConfig(dsn, **settings)
    parsed = parse_dsn(dsn)
    # The reading is asyncpg's: hosts, ports, user, database, and the password it would use
    # is one of the secrets masked.
    addrs, params = oracle(dsn)
    if parsed.hosts:
        expected = [
            f"{h}/.s.PGSQL.{p or 5432}" if h.startswith("/") else (h, p or 5432)
            for h, p in zip(parsed.hosts, parsed.ports, strict=True)
        ]
        assert addrs == expected
    if parsed.user is not None:
        assert params.user == parsed.user
    if parsed.database is not None:
        assert params.database == parsed.database
    if params.password is not None:
        assert params.password in parsed.secrets
    assert password not in repr(parsed)

    manager = adm.PoolManager({"db": config})
    shown += [repr(config), str(config), repr(manager), config.redacted_dsn]

    async def scenario() -> None:
        await manager.open()  # refused connections: the pool comes up "down"
        try:
            with pytest.raises(adm.PoolError) as info:
                async with manager.connection("db"):
                    pass
            shown.append(str(info.value))
            shown.append("".join(traceback.format_exception(info.value)))
            shown.append(repr(manager.stats("db")))
            shown.append(repr(await manager.check(timeout=1.0)))
        finally:
            await manager.close()

    asyncio.run(scenario())
    assert caplog.records, "the pool logs its SSL choice and the outage"
    for record in caplog.records:
        shown.append(record.getMessage())
        if record.exc_info:
            shown.append("".join(traceback.format_exception(*record.exc_info)))
    for text in shown:
        assert_clean(text, dsn, password)


@pytest.mark.parametrize(
    ("dsn", "secret"),
    [
        (f"postgresql://app:pa?{HEAD}@db.internal/rag", f"pa?{HEAD}"),
        (f"postgresql://app:pa#{HEAD}@db.internal/rag", f"pa#{HEAD}"),
        (f"postgresql://app:pa/{HEAD}@db.internal/rag", f"pa/{HEAD}"),
        (f"postgresql://app:pa@{HEAD}@db.internal/rag", f"pa@{HEAD}"),
    ],
)
def test_issue_12_unencoded_reserved_characters_are_refused_redacted(dsn: str, secret: str) -> None:
    with pytest.raises(ValueError, match="percent-encode") as info:
        adm.PoolConfig(dsn)
    message = str(info.value)
    assert "'postgresql://app:***@db.internal/rag'" in message
    for form in (secret, "pa", HEAD):
        assert form not in message.replace("password", "").replace("separator", "")


def test_issue_12_encoded_password_key_is_masked() -> None:
    dsn = "postgresql://app@db.internal/rag?pass%77ord=Secret&application_name=x"
    config = adm.PoolConfig(dsn)
    assert config.redacted_dsn == (
        "postgresql://app@db.internal/rag?pass%77ord=***&application_name=x"
    )
    assert "Secret" not in repr(config) + repr(adm.PoolManager({"db": config}))
    assert parse_dsn(dsn).params == {"application_name": "x"}


def test_auto_tls_reads_the_host_asyncpg_uses() -> None:
    # Issue 12 item 1 took the host to be "app"; encoded, the host is db.internal.
    encoded = parse_dsn("postgresql://app:pa%3Fss@db.internal/rag")
    assert encoded.hosts == ("db.internal",)
    assert str(choose_ssl("auto", None, encoded, {})) == (
        "ssl=require (auto: non-loopback host db.internal, no root certificate configured)"
    )
    local = parse_dsn("postgresql://app:pa%3Fss%40remote@127.0.0.1/rag")
    assert str(choose_ssl("auto", None, local, {})) == "ssl=disable (auto: loopback host)"
    # host= counts only when the authority names none, as in asyncpg.
    both = parse_dsn("postgresql://db.internal/rag?host=/run/postgresql")
    assert both.hosts == ("db.internal",)
    socket_only = parse_dsn("postgresql:///rag?host=/run/postgresql")
    assert str(choose_ssl("auto", None, socket_only, {})) == "ssl=disable (auto: unix socket)"


def test_driver_messages_are_scrubbed_of_every_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "env-" + HEAD)
    config = adm.PoolConfig(
        f"postgresql://app:{quote('dsn/' + HEAD, safe='')}@h/db?sslpassword=key-{TAIL}",
        password="arg-" + HEAD,
    )
    manager = adm.PoolManager({"db": config})
    pool = manager._get("db")  # the function every pool message goes through
    for secret in ("env-" + HEAD, "arg-" + HEAD, "dsn/" + HEAD, "dsn%2F" + HEAD, "key-" + TAIL):
        text = pool.describe(RuntimeError(f"driver said {secret!r}"))
        assert HEAD not in text, text
        assert TAIL not in text, text
        assert "***" in text


PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # env set once
@given(
    user=st.text(PRINTABLE, min_size=1, max_size=6),
    middle=st.text(PRINTABLE, max_size=10),
    encode=st.sampled_from(["none", "all", "user", "password"]),
    in_query=st.booleans(),
)
def test_any_password_is_refused_or_read_as_asyncpg_reads_it_and_never_shown(
    user: str, middle: str, encode: str, in_query: bool, clean_env: None
) -> None:
    """Any printable password, in the userinfo or the query, encoded or not: admission
    refuses the DSN or reads it as asyncpg does, and no part of the password shows."""
    password = HEAD + middle + TAIL
    u = quote(user, safe="") if encode in ("all", "user") else user
    p = quote(password, safe="") if encode in ("all", "password") else password
    hosts = "127.0.0.1:5432,[::1]"
    if in_query:
        dsn = f"postgresql://{u}@{hosts}/db?sslmode=disable&password={p}&application_name=x"
    else:
        dsn = f"postgresql://{u}:{p}@{hosts}/db?sslmode=disable"
    try:
        parsed = parse_dsn(dsn)
    except ValueError as error:
        shown = [str(error), redact_dsn(dsn)]
    else:
        _, params = oracle(dsn)
        if params.password:
            assert params.password in parsed.secrets
        shown = [parsed.redacted, repr(parsed), redact_dsn(dsn)]
        if encode == "all":  # encoded: read exactly as meant
            assert (params.user, params.password, params.database) == (user, password, "db")
            assert parsed.hosts == ("127.0.0.1", "::1")
    for text in shown:
        assert HEAD not in text, (dsn, text)
        assert TAIL not in text, (dsn, text)


# ---------------------------------------------------------------- against a real server

ROLE_PASSWORD = f"{HEAD}?#/@%{TAIL}"


def test_real_login_with_a_hostile_password(
    pg: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    pg.psql(f"ALTER ROLE {APP_USER} PASSWORD '{ROLE_PASSWORD}'")
    host = f"{pg.host}:{pg.port}"
    dsns = [
        # The userinfo needs ?, #, / and @ encoded; % may stay as is (not followed by hex).
        f"postgresql://{APP_USER}:{quote(ROLE_PASSWORD, safe='')}@{host}/{DATABASE}",
        f"postgresql://{APP_USER}:{quote(ROLE_PASSWORD, safe='%')}@{host}/{DATABASE}",
        # A query value takes ? and / unencoded; # and @ must be encoded.
        f"postgresql://{APP_USER}@{host}/{DATABASE}?password="
        + ROLE_PASSWORD.replace("#", "%23").replace("@", "%40"),
        f"postgresql://{host}/{DATABASE}?user={APP_USER}&pass%77ord={quote_plus(ROLE_PASSWORD)}",
    ]
    caplog.set_level(logging.DEBUG)
    manager = adm.PoolManager(
        {f"p{i}": adm.PoolConfig(dsn, min_size=1, max_size=1) for i, dsn in enumerate(dsns)}
    )

    async def scenario() -> list[Any]:
        async with manager:
            results = []
            for name in manager.names:
                async with manager.connection(name) as conn:
                    results.append(await conn.fetchval("SELECT current_user"))
            return results

    assert asyncio.run(scenario()) == [APP_USER] * len(dsns)
    everything = caplog.text + repr(manager)
    for form in forms("", ROLE_PASSWORD):
        assert form not in everything


WRONG = f"{TAIL}?#/@%{HEAD}"


@pytest.mark.parametrize(
    "spelling",
    [
        "userinfo:{encoded}",
        "query:password={encoded}",
        "query:pass%77ord={encoded}",
        "argument",
        "PGPASSWORD",
    ],
)
def test_wrong_password_error_has_no_secret(
    pg: PostgresServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    spelling: str,
) -> None:
    pg.psql(f"ALTER ROLE {APP_USER} PASSWORD '{ROLE_PASSWORD}'")
    base = f"postgresql://{APP_USER}@{pg.host}:{pg.port}/{DATABASE}"
    encoded = quote(WRONG, safe="")
    password = None
    if spelling.startswith("userinfo:"):
        dsn = base.replace(f"{APP_USER}@", f"{APP_USER}:{encoded}@")
    elif spelling.startswith("query:"):
        dsn = base + "?" + spelling.removeprefix("query:").format(encoded=encoded)
    elif spelling == "argument":
        dsn, password = base, WRONG
    else:
        dsn = base
        monkeypatch.setenv("PGPASSWORD", WRONG)
    caplog.set_level(logging.DEBUG)
    manager = adm.PoolManager({"db": adm.PoolConfig(dsn, password=password)})
    with pytest.raises(adm.PoolConnectError) as info:
        asyncio.run(manager.open())
    assert "password authentication failed" in str(info.value)
    assert isinstance(info.value.__cause__, asyncpg.InvalidPasswordError)
    everything = (
        str(info.value)
        + "".join(traceback.format_exception(info.value))
        + caplog.text
        + repr(manager)
        + repr(manager.stats("db"))
    )
    for form in forms("", WRONG) + forms("", ROLE_PASSWORD):
        assert form not in everything
