"""PoolConfig and PoolManager configuration: clear errors, redaction, the SSL choice.

Pure checks (no server needed); the SSL choice's effect on real connections is tested in
test_pool_ssl.py.
"""

from __future__ import annotations

import pickle
import ssl
from typing import Any

import pytest

import admission as adm
from admission.pools.dsn import parse_dsn, redact_dsn
from admission.pools.tls import choose_ssl

SECRET = "hunter2-secret"
DSN = f"postgresql://app:{SECRET}@db.internal:5432/rag"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"min_size": 30, "max_size": 20}, ValueError, r"min_size \(30\) must not exceed"),
        ({"max_size": 0}, ValueError, "max_size must be an integer >= 1, got 0"),
        ({"max_size": 2.5}, TypeError, "max_size must be an integer"),
        ({"min_size": -1}, ValueError, "min_size must be an integer >= 0"),
        ({"max_size": True}, TypeError, "max_size must be an integer"),
        ({"max_waiters": -1}, ValueError, "max_waiters must be an integer >= 0"),
        ({"acquire_timeout": -1}, ValueError, "acquire_timeout must be a finite"),
        ({"acquire_timeout": float("nan")}, ValueError, "acquire_timeout must be a finite"),
        ({"acquire_timeout": "ten"}, ValueError, "acquire_timeout must be a duration"),
        ({"acquire_timeout": [10]}, TypeError, "acquire_timeout must be a number of seconds"),
        ({"connect_timeout": 0}, ValueError, "connect_timeout must be a finite number"),
        ({"connect_timeout": None}, TypeError, "connect_timeout must be a number of seconds"),
        ({"close_timeout": float("inf")}, ValueError, "close_timeout must be a finite"),
        ({"health_check_interval": 0}, ValueError, "health_check_interval must be"),
        ({"reconnect_base": 1.0, "reconnect_cap": 0.5}, ValueError, "reconnect_cap"),
        ({"ssl": "sometimes"}, ValueError, "ssl must be one of auto, disable"),
        ({"ssl_root_cert": 42}, TypeError, "ssl_root_cert must be a path"),
        ({"application_name": 7}, TypeError, "application_name must be a str"),
        ({"connect_kwargs": {"ssl": False}}, ValueError, "connect_kwargs may not set ssl"),
        ({"connect_kwargs": {"timeout": 3}}, ValueError, "connect_kwargs may not set timeout"),
        ({"init": "not callable"}, TypeError, "init must be an async callable"),
    ],
)
def test_bad_config_names_the_argument_and_value(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match) as info:
        adm.PoolConfig(DSN, **kwargs)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    "dsn", [f"mysql://app:{SECRET}@db/rag", f"app:{SECRET}@db/rag", "host=db password=x"]
)
def test_a_dsn_that_is_not_a_postgres_url_is_refused_redacted(dsn: str) -> None:
    with pytest.raises(ValueError, match="dsn must be a URL starting with postgresql://") as e:
        adm.PoolConfig(dsn)
    assert SECRET not in str(e.value)
    assert "password=x" not in str(e.value)


def test_dsn_of_the_wrong_type() -> None:
    with pytest.raises(TypeError, match="dsn must be a str"):
        adm.PoolConfig(b"postgresql://db/rag")  # type: ignore[arg-type]


def test_password_never_in_reprs() -> None:
    config = adm.PoolConfig(DSN, password="other-" + SECRET)
    manager = adm.PoolManager({"rag": config})
    for text in (repr(config), str(config), repr(manager), config.redacted_dsn):
        assert SECRET not in text
    assert "app:***@db.internal:5432/rag" in repr(config)
    assert SECRET not in repr(manager.stats("rag"))


@pytest.mark.parametrize(
    ("dsn", "redacted"),
    [
        (f"postgresql://app:{SECRET}@h/db", "postgresql://app:***@h/db"),
        ("postgresql://app:p%40ss%2Fw@h:1/db", "postgresql://app:***@h:1/db"),
        ("postgresql://app:p@ss/w@h/db", "postgresql://app:***@h/db"),  # unencoded @ and /
        ("postgres://app@h1:5432,h2:5433/db", "postgres://app@h1:5432,h2:5433/db"),
        (f"postgresql://h/db?user=a&password={SECRET}", "postgresql://h/db?user=a&password=***"),
        (f"postgresql://h/db?sslpassword={SECRET}&x=1", "postgresql://h/db?sslpassword=***&***"),
        (
            f"postgresql://h/db?x=1&password={SECRET}&sslmode=disable",
            "postgresql://h/db?x=1&password=***&sslmode=disable",
        ),
        ("postgresql:///db?host=/run/postgresql", "postgresql:///db?host=/run/postgresql"),
        (f"not a url {SECRET}", "***"),
    ],
)
def test_redact_dsn(dsn: str, redacted: str) -> None:
    assert redact_dsn(dsn) == redacted


def test_manager_config_errors() -> None:
    config = adm.PoolConfig(DSN)
    with pytest.raises(ValueError, match="at least one pool"):
        adm.PoolManager({})
    with pytest.raises(TypeError, match="mapping of names to PoolConfig"):
        adm.PoolManager([("rag", config)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pool 'rag': expected a PoolConfig, got dict"):
        adm.PoolManager({"rag": {"dsn": DSN}})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="non-empty strings"):
        adm.PoolManager({"": config})


def test_unknown_pool_name() -> None:
    pools = adm.PoolManager({"rag": adm.PoolConfig(DSN), "reports": adm.PoolConfig(DSN)})
    for call in (pools.connection, pools.transaction, pools.stats):
        with pytest.raises(adm.UnknownPool, match="no pool named 'ragg'") as info:
            call("ragg")
        assert "configured: 'rag', 'reports'" in str(info.value)
        assert isinstance(info.value, LookupError)
        assert isinstance(info.value, adm.AdmissionError)
        assert info.value.pool == "ragg"


def test_errors_pickle() -> None:
    for exc in (
        adm.PoolUnavailable("rag", "down", retry_after=0.5),
        adm.PoolConnectionLost("rag", "lost"),
        adm.PoolServerFull("rag", "too many connections", retry_after=0.5),
        adm.PoolTimeout("rag", 2.0),
        adm.PoolOverloaded("rag", "too many"),
        adm.PoolClosed("rag", "closed"),
        adm.PoolConnectError("rag", "wrong password"),
        adm.UnknownPool("x", "no pool named 'x'"),
    ):
        copy = pickle.loads(pickle.dumps(exc))
        assert (type(copy), str(copy), copy.pool) == (type(exc), str(exc), exc.pool)
    timeout = pickle.loads(pickle.dumps(adm.PoolTimeout("rag", 2.0)))
    assert isinstance(timeout, adm.PoolTimeout)
    assert isinstance(timeout, TimeoutError)
    assert timeout.timeout == 2.0
    full = pickle.loads(pickle.dumps(adm.PoolServerFull("rag", "full", retry_after=0.5)))
    assert full.retry_after == 0.5


# ----------------------------------------------------------------------- the SSL choice


def choice(dsn: str, setting: Any = "auto", root: str | None = None, **env: str) -> str:
    return str(choose_ssl(setting, root, parse_dsn(dsn), env))


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://app@127.0.0.1/db", "ssl=disable (auto: loopback host)"),
        ("postgresql://app@localhost:5433/db", "ssl=disable (auto: loopback host)"),
        ("postgresql://app@[::1]:5432/db", "ssl=disable (auto: loopback host)"),
        ("postgresql://app@127.0.0.1,localhost/db", "ssl=disable (auto: loopback host)"),
        ("postgresql:///db?host=/run/postgresql", "ssl=disable (auto: unix socket)"),
        ("postgresql:///db", "ssl=disable (auto: the driver's default local socket)"),
        (
            "postgresql://app@10.0.0.5/db",
            "ssl=require (auto: non-loopback host 10.0.0.5, no root certificate configured)",
        ),
        (
            "postgresql://app@localhost,db.internal/db",
            "ssl=require (auto: non-loopback host db.internal, no root certificate configured)",
        ),
        (
            "postgresql://app@db.internal/db?sslrootcert=/etc/ca.pem",
            "ssl=verify-full (auto: sslrootcert in the DSN configured)",
        ),
    ],
)
def test_auto_ssl_choice(dsn: str, expected: str) -> None:
    assert choice(dsn) == expected


def test_explicit_ssl_settings_win() -> None:
    remote = "postgresql://app@db.internal/db"
    assert choice(remote, "disable") == "ssl=disable (explicit: PoolConfig.ssl)"
    assert choice(remote + "?sslmode=verify-ca") == "ssl=verify-ca (explicit: sslmode in the DSN)"
    assert choice(remote, PGSSLMODE="prefer") == "ssl=prefer (explicit: PGSSLMODE)"
    assert choice("postgresql://127.0.0.1/db", True) == "ssl=require (explicit: PoolConfig.ssl)"
    context = ssl.create_default_context()
    chosen = choose_ssl(context, None, parse_dsn(remote), {})
    assert chosen.arg is context
    assert chosen.mode == "custom SSLContext"
    # The DSN's own sslmode is left to the driver: nothing is passed that could override it.
    assert choose_ssl("auto", None, parse_dsn(remote + "?sslmode=disable"), {}).arg is None


def test_auto_with_an_unreadable_root_cert_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"ssl_root_cert '/nonexistent/ca\.pem' cannot be loaded"):
        choice("postgresql://db.internal/db", root="/nonexistent/ca.pem")
