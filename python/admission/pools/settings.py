"""``[pools.NAME]`` tables of a configuration file: `PoolConfig`, checked, with clear errors.

::

    [pools.rag]
    dsn_env = "RAG_DSN"        # the DSN is read from this environment variable (or: dsn = "...")
    policy = "database"        # default; its timeout (10 s) is the acquire_timeout unless set
    min_size = 5
    max_size = 20
    max_waiters = 1000         # "none": unbounded
    acquire_timeout = "10s"    # "none": wait as long as it takes
    connect_timeout = "5s"     # also: command_timeout, close_timeout, health_check_interval,
                               # max_inactive_connection_lifetime, reconnect_base, reconnect_cap
    ssl = "auto"               # or a libpq sslmode, or true/false; ssl_root_cert = "ca.pem"
    application_name = "rag"

Durations take numbers of seconds or strings (``"250ms"``, ``"1m"``), as `PoolConfig` does;
``"none"`` (or a YAML/JSON null) switches an optional setting off. The DSN (and so its
password) is never shown: errors name the key and the environment variable, not the value.

>>> from admission.policies import DEFAULT
>>> cfgs = pool_configs({"rag": {"dsn_env": "RAG_DSN", "max_size": 20}}, DEFAULT,
...                     {"RAG_DSN": "postgresql://app:s3cret@db/rag"})
>>> cfgs["rag"]
PoolConfig('postgresql://app:***@db/rag', min_size=1, max_size=20, acquire_timeout=10.0, ...)
>>> pool_configs({"rag": {"dsn_env": "RAG_DSN"}}, DEFAULT, {})
Traceback (most recent call last):
admission.errors.ConfigError: pools.rag.dsn_env: the environment variable RAG_DSN is not set
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from admission.durations import parse_duration
from admission.errors import ConfigError
from admission.policies import PolicySet, hint, is_none
from admission.pools.config import PoolConfig

__all__ = ["POOL_KEYS", "pool_configs"]

DEFAULT_POLICY = "database"
"""The policy a pool follows unless its table names another."""


def _duration(optional: bool) -> Callable[[object, str], object]:
    def coerce(value: object, key: str) -> object:
        if optional and is_none(value):
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f'expected a duration such as "10s", got {value!r}', key=key)
        return parse_duration(value, key)

    return coerce


def _integer(optional: bool) -> Callable[[object, str], object]:
    def coerce(value: object, key: str) -> object:
        if optional and is_none(value):
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            none = ', or "none"' if optional else ""
            raise ConfigError(f"expected an integer{none}, got {value!r}", key=key)
        return value

    return coerce


def _string(value: object, key: str) -> object:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"expected a non-empty string, got {value!r}", key=key)
    return value


def _ssl(value: object, key: str) -> object:
    if isinstance(value, bool):
        return value
    return _string(value, key)


_SETTINGS: dict[str, Callable[[object, str], object]] = {
    "min_size": _integer(False),
    "max_size": _integer(False),
    "max_waiters": _integer(True),
    "acquire_timeout": _duration(True),
    "connect_timeout": _duration(False),
    "command_timeout": _duration(True),
    "close_timeout": _duration(False),
    "health_check_interval": _duration(True),
    "max_inactive_connection_lifetime": _duration(False),
    "reconnect_base": _duration(False),
    "reconnect_cap": _duration(False),
    "ssl": _ssl,
    "ssl_root_cert": _string,
    "application_name": _string,
}
POOL_KEYS = ("dsn", "dsn_env", "policy", *_SETTINGS)
"""The keys a ``[pools.NAME]`` table may have."""


def pool_configs(
    tables: Mapping[str, Any], policies: PolicySet, environ: Mapping[str, str]
) -> dict[str, PoolConfig]:
    """`PoolConfig` by name from the ``[pools]`` tables; ``dsn_env`` is looked up in ``environ``.

    Raises:
        ConfigError: naming the key (``pools.rag.max_size``), never showing a DSN's password.
    """
    return {name: _pool(name, table, policies, environ) for name, table in tables.items()}


def _pool(
    name: str, table: Mapping[str, Any], policies: PolicySet, environ: Mapping[str, str]
) -> PoolConfig:
    prefix = f"pools.{name}"
    if not isinstance(table, Mapping):
        raise ConfigError(f"expected a table, got {table!r}", key=prefix)
    for key in table:
        if key not in POOL_KEYS:
            raise ConfigError(
                f"unknown key{hint(str(key), POOL_KEYS)}; expected one of: {', '.join(POOL_KEYS)}",
                key=f"{prefix}.{key}",
            )
    policy = table.get("policy", DEFAULT_POLICY)
    if not isinstance(policy, str) or policy not in policies:
        suggestion = hint(policy, policies) if isinstance(policy, str) else ""
        raise ConfigError(
            f"expected one of the policies: {', '.join(policies)}, got {policy!r}{suggestion}",
            key=f"{prefix}.policy",
        )
    settings: dict[str, Any] = {"acquire_timeout": policies[policy].timeout}
    for key, coerce in _SETTINGS.items():
        if key in table:
            settings[key] = coerce(table[key], f"{prefix}.{key}")
    dsn = _dsn(table, prefix, environ)
    try:
        return PoolConfig(dsn, **settings)
    except (TypeError, ValueError) as exc:
        # PoolConfig's messages name the setting and never show the password.
        raise ConfigError(str(exc), key=prefix) from None


def _dsn(table: Mapping[str, Any], prefix: str, environ: Mapping[str, str]) -> str:
    if ("dsn" in table) == ("dsn_env" in table):
        raise ConfigError(
            "expected exactly one of dsn (the URL) or dsn_env (the environment variable that "
            "holds it)",
            key=prefix,
        )
    if "dsn" in table:
        dsn = table["dsn"]
        if not isinstance(dsn, str) or not dsn:
            shown = repr(dsn) if not isinstance(dsn, str) else "an empty string"
            raise ConfigError(f"expected a postgresql:// URL, got {shown}", key=f"{prefix}.dsn")
        return dsn
    variable = _string(table["dsn_env"], f"{prefix}.dsn_env")
    assert isinstance(variable, str)
    value = environ.get(variable)
    if not value:
        state = "is not set" if value is None else "is empty"
        raise ConfigError(f"the environment variable {variable} {state}", key=f"{prefix}.dsn_env")
    return value
