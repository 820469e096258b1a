"""The tables of a configuration beyond its limits, and what a `ConcurrencyManager` keeps for
each: the one module that knows them by name (``[stores.NAME]``: a store each, where limits
that name it keep their state; ``[pools.NAME]``: a `PoolManager`; ``[breakers.NAME]``: a
`CircuitBreaker` each; ``[retries.NAME]``: a `Retry` each).

`admission.config` parses each table with its section's parser (`PARSERS`; the settings land
in `Config.sections`). `admission.manager` gets one `Section` of each kind per manager
(`sections`) and drives them all the same way, without knowing what they hold:

- ``prepare(settings, source, first)`` runs in a reload before anything changes: it raises
  `ConfigError` to refuse the reload (then nothing changes), or returns the call that puts
  the settings in force, which runs once the limits have switched and cannot fail;
- ``open()`` and ``aclose()`` run with the manager's.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar, final
from urllib.parse import urlsplit

from admission._backoff import JITTERS
from admission._native import LoopClock, ManualClock
from admission.breaker import CircuitBreaker
from admission.durations import seconds
from admission.errors import ConfigError, UnknownLimit
from admission.policies import (
    BREAKER_DEFAULTS,
    RETRY_DEFAULTS,
    BreakerPolicy,
    BudgetPolicy,
    PolicySet,
    RetryPolicy,
    _count,
    _threshold,
    hint,
    is_none,
    nearest,
)
from admission.pools.config import PoolConfig
from admission.pools.dsn import parse_dsn, redact_dsn
from admission.pools.errors import UnknownPool
from admission.pools.manager import PoolManager, _ConnectionBlock
from admission.pools.settings import pool_configs
from admission.retry import Retry
from admission.retry_budget import RetryBudget
from admission.stores.network import NetworkStore

if TYPE_CHECKING:
    from admission.stores.shared_memory import SharedMemory

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import ExceptionGroup

__all__ = [
    "NETWORK_KINDS",
    "PARSERS",
    "STORE_KINDS",
    "ConnectionBlock",
    "Section",
    "Store",
    "StoreConfig",
    "breaker",
    "breaker_policies",
    "connection",
    "pending_store",
    "pool_manager",
    "retry",
    "retry_policies",
    "sections",
    "store",
    "store_configs",
]

Parser = Callable[[Mapping[str, Any], PolicySet, Mapping[str, str]], Mapping[str, Any]]
"""Settings from a section's table, given the policies in force and the environment (for
variables the table names); raises `ConfigError` naming the key."""

_Clock = ManualClock | LoopClock | None
_P = TypeVar("_P", RetryPolicy, BreakerPolicy)


# ---------------------------------------------------------------------------------------------
# [breakers.NAME] and [retries.NAME]: parsing
# ---------------------------------------------------------------------------------------------


def _positive_duration(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f'expected a duration such as "10s", got {value!r}', key=key)
    return seconds(value, key, positive=True, config=True)


def _optional_duration(value: object, key: str) -> float | None:
    return None if is_none(value) else _positive_duration(value, key)


def _window(value: object, key: str) -> int | float:
    if isinstance(value, str):
        return _positive_duration(value, key)  # a time window
    if isinstance(value, float):
        raise ConfigError(
            f'expected a number of calls (an integer) or a duration such as "60s", got '
            f"{value!r}: ambiguous",
            key=key,
        )
    return _count(value, key, top=2**20, optional=False)  # type: ignore[return-value]


def _counter(top: int, optional: bool = False) -> Callable[[object, str], object]:
    return lambda value, key: _count(value, key, top=top, optional=optional)


def _jitter(value: object, key: str) -> str:
    if value not in JITTERS:
        raise ConfigError(f"expected one of: {', '.join(JITTERS)}, got {value!r}", key=key)
    return str(value)


def _nonnegative(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e18:
        raise ConfigError(f"expected a finite number >= 0, got {value!r}", key=key)
    return float(value)


_BUDGET: dict[str, Callable[[object, str], object]] = {
    "ratio": _nonnegative,
    "min_per_second": _nonnegative,
    "window": _positive_duration,
}


def _budget(value: object, key: str, inherited: BudgetPolicy | None) -> BudgetPolicy | None:
    if is_none(value) or value is False:
        return None
    if value is True:
        return inherited or BudgetPolicy()
    if not isinstance(value, Mapping):
        raise ConfigError(
            'expected a table (ratio, min_per_second, window), true, false or "none", '
            f"got {value!r}",
            key=key,
        )
    own = _coerce(value, _BUDGET, f"{key}.")
    return dataclasses.replace(inherited or BudgetPolicy(), **own)


def _name(value: object, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"expected the name of a [breakers.NAME] table, got {value!r}", key=key)
    return value


_BREAKER: dict[str, Callable[[object, str], object]] = {
    "failure_rate": _threshold,
    "window": _window,
    "min_calls": _counter(2**32 - 1),
    "slow_call_duration": _optional_duration,
    "slow_call_rate": _threshold,
    "open_for": _positive_duration,
    "open_for_max": _positive_duration,
    "half_open_calls": _counter(0xFFFF),
}
_RETRY: dict[str, Callable[[object, str], object]] = {
    "attempts": _counter(2**31 - 1, optional=True),
    "deadline": _optional_duration,
    "base": _positive_duration,
    "cap": _positive_duration,
    "jitter": _jitter,
    "breaker": _name,
    # "budget": see _budget (it inherits field by field)
}


def _coerce(
    fields: Mapping[str, object],
    coercers: Mapping[str, Callable[[object, str], object]],
    prefix: str,
    also: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Checked ``fields``; ``also``: the other keys the table may hold (named in errors)."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        coerce = coercers.get(key)
        if coerce is None:
            known = (*also, *coercers)
            raise ConfigError(
                f"unknown key{hint(str(key), known)}; expected one of: {', '.join(known)}",
                key=f"{prefix}{key}",
            )
        out[key] = coerce(value, f"{prefix}{key}")
    return out


def _tables(
    section: str,
    tables: Mapping[str, Any],
    policies: PolicySet,
    defaults: Mapping[str, _P],
    coercers: Mapping[str, Callable[[object, str], object]],
) -> dict[str, tuple[str, _P, dict[str, Any]]]:
    """Each table's key prefix, the defaults of its policy, and the fields it sets, checked."""
    out: dict[str, tuple[str, _P, dict[str, Any]]] = {}
    for name, table in tables.items():
        prefix = f"{section}.{name}."
        if not isinstance(table, Mapping):
            raise ConfigError(f"expected a table, got {table!r}", key=prefix[:-1])
        fields = dict(table)
        policy = fields.pop("policy", "default")
        if not isinstance(policy, str) or policy not in policies:
            suggestion = hint(policy, policies) if isinstance(policy, str) else ""
            raise ConfigError(
                f"expected one of the policies: {', '.join(policies)}, got {policy!r}{suggestion}",
                key=f"{prefix}policy",
            )
        budget = fields.pop("budget", _UNSET)
        also = ("policy", "budget") if defaults is RETRY_DEFAULTS else ("policy",)
        if budget is not _UNSET and defaults is not RETRY_DEFAULTS:
            fields["budget"] = budget  # not a breaker's key: refused, naming it
        own = _coerce(fields, coercers, prefix, also)
        base = defaults[nearest(policy, policies, defaults)]
        if budget is not _UNSET:
            assert isinstance(base, RetryPolicy)
            own["budget"] = _budget(budget, f"{prefix}budget", base.budget)
        out[name] = (prefix, dataclasses.replace(base, policy=policy), own)
    return out


_UNSET: Any = object()
# The argument a constructor's message names first ("window must be ...", "cap (...) must").
_ARGUMENT = re.compile(r"^([a-z_]+)\b")


def _checked(make: Callable[[], object], prefix: str, known: Mapping[str, object]) -> None:
    """Builds the object once, unnamed, to apply the constructor's own checks (the ones that
    tie fields together: ``cap`` at least ``base``, ``open_for_max`` at least ``open_for``)."""
    try:
        make()
    except (TypeError, ValueError) as exc:
        found = _ARGUMENT.match(str(exc))
        field = found.group(1) if found and found.group(1) in known else None
        raise ConfigError(str(exc), key=prefix + field if field else prefix[:-1]) from None


def breaker_policies(
    tables: Mapping[str, Any], policies: PolicySet, environ: Mapping[str, str]
) -> dict[str, BreakerPolicy]:
    """The ``[breakers.NAME]`` tables, each resolved over its policy's `BreakerPolicy`.

    >>> from admission.policies import DEFAULT
    >>> b = breaker_policies({"openai": {"window": "60s", "open_for": "1m"}}, DEFAULT, {})
    >>> b["openai"].window, b["openai"].open_for, b["openai"].min_calls
    (60.0, 60.0, 20)
    >>> breaker_policies({"x": {"open_for": "1m", "open_for_max": "30s"}}, DEFAULT, {})
    Traceback (most recent call last):
    admission.errors.ConfigError: breakers.x.open_for_max: open_for_max must be at least ...
    """
    out: dict[str, BreakerPolicy] = {}
    for name, (prefix, base, own) in _tables(
        "breakers", tables, policies, BREAKER_DEFAULTS, _BREAKER
    ).items():
        if "open_for" in own and "open_for_max" not in own:
            own["open_for_max"] = max(own["open_for"], base.open_for_max)
        settings = dataclasses.replace(base, **own)
        _checked(functools.partial(_new_breaker, None, settings, None), prefix, _BREAKER)
        out[name] = settings
    return out


def retry_policies(
    tables: Mapping[str, Any], policies: PolicySet, environ: Mapping[str, str]
) -> dict[str, RetryPolicy]:
    """The ``[retries.NAME]`` tables, each resolved over its policy's `RetryPolicy`.

    >>> from admission.policies import DEFAULT
    >>> r = retry_policies({"openai": {"policy": "openai", "attempts": 4}}, DEFAULT, {})
    >>> r["openai"].attempts, r["openai"].cap, r["openai"].budget.ratio
    (4, 30.0, 0.2)
    >>> retry_policies({"x": {"base": "2s", "cap": "1s"}}, DEFAULT, {})
    Traceback (most recent call last):
    admission.errors.ConfigError: retries.x.cap: cap (1.0) must be at least base (2.0)
    """
    out: dict[str, RetryPolicy] = {}
    for name, (prefix, base, own) in _tables(
        "retries", tables, policies, RETRY_DEFAULTS, _RETRY
    ).items():
        settings = dataclasses.replace(base, **own)
        _checked(functools.partial(_new_retry, None, settings, None, None, None), prefix, _RETRY)
        out[name] = settings
    return out


# ---------------------------------------------------------------------------------------------
# [stores.NAME]: parsing
# ---------------------------------------------------------------------------------------------

Store: TypeAlias = "SharedMemory | NetworkStore"
"""What a ``[stores.NAME]`` table makes."""


@dataclass(frozen=True, slots=True)
class _Kind:
    """A kind of store: the class a table of that kind makes, and the options it takes."""

    module: str
    """Imported when a table of this kind is first put in force, so that a store whose
    module (or driver) is missing costs nothing to a configuration that does not use it."""
    cls: str
    options: Mapping[str, Callable[[object, str], object]]
    network: bool
    """Its limiters live on a server: async only, with ``on_store_error``, ``instances`` and
    ``lease`` (`admission.stores.remote`)."""
    url: str | None = None
    """The option holding the server's URL (its secrets masked when shown); ``<url>_env``
    names the environment variable to read it from instead."""


def _segment_name(value: object, key: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,200}", value):
        raise ConfigError(
            f"expected a segment name of 1 to 200 letters, digits, '_', '.' or '-', got {value!r}",
            key=key,
        )
    return value


def _mode(value: object, key: str) -> int:
    number: object = value
    if isinstance(value, str) and re.fullmatch(r"(0o?)?[0-7]{1,4}", value.strip()):
        number = int(value.strip().removeprefix("0o"), 8)  # "0600", "0o600": octal, as in chmod
    if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= 0o777:
        raise ConfigError(
            f'expected permissions such as 0o600 (TOML, YAML 0600) or "0600", got {value!r}',
            key=key,
        )
    if number & 0o002:
        raise ConfigError(
            f"expected permissions without write access for others (any user of the host could "
            f"then change every limit), got {number:#o}",
            key=key,
        )
    return number


def _text(value: object, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"expected a non-empty string, got {value!r}", key=key)
    return value


def _schema(value: object, key: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", value):
        raise ConfigError(
            f"expected a schema name (letters, digits and '_', not starting with a digit; at "
            f"most 63), got {value!r}",
            key=key,
        )
    return value


def _boolean(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"expected true or false, got {value!r}", key=key)
    return value


def _nonnegative_duration(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f'expected a duration such as "10ms", got {value!r}', key=key)
    return seconds(value, key, config=True)


def _redis_url(value: object, key: str) -> str:
    if not isinstance(value, str) or not value:
        shown = "an empty string" if value == "" else repr(value)
        raise ConfigError(f"expected a redis:// URL, got {shown}", key=key)
    try:
        scheme = urlsplit(value).scheme
    except ValueError:
        scheme = ""
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"expected a redis://, rediss:// or unix:// URL, got {redact_dsn(value)!r}", key=key
        )
    return value


def _postgres_dsn(value: object, key: str) -> str:
    if not isinstance(value, str) or not value:
        shown = "an empty string" if value == "" else repr(value)
        raise ConfigError(f"expected a postgresql:// URL, got {shown}", key=key)
    try:
        parse_dsn(value)
    except ValueError as exc:  # its message shows the DSN redacted
        raise ConfigError(str(exc), key=key) from None
    return value


STORE_KINDS: Mapping[str, _Kind] = MappingProxyType(
    {
        "shared_memory": _Kind(
            "admission.stores.shared_memory",
            "SharedMemory",
            {"name": _segment_name, "capacity": _counter(65_536), "mode": _mode},
            network=False,
        ),
        "memory": _Kind(
            "admission.stores.memory",
            "MemoryStore",
            {"timeout": _positive_duration, "latency": _nonnegative_duration},
            network=True,
        ),
        "redis": _Kind(
            "admission.stores.redis",
            "Redis",
            {"url": _redis_url, "timeout": _positive_duration, "prefix": _text},
            network=True,
            url="url",
        ),
        "postgres": _Kind(
            "admission.stores.postgres",
            "Postgres",
            {
                "dsn": _postgres_dsn,
                "schema": _schema,
                "timeout": _positive_duration,
                "create": _boolean,
            },
            network=True,
            url="dsn",
        ),
    }
)
"""Each ``kind`` a ``[stores.NAME]`` table may have: ``shared_memory`` (`SharedMemory`: the
processes of one host), ``memory`` (`MemoryStore`: this process, for tests), ``redis`` and
``postgres`` (every host)."""

NETWORK_KINDS = tuple(kind for kind, k in STORE_KINDS.items() if k.network)
"""The kinds whose limits live on a server (`admission.stores.network`): async only."""


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """A ``[stores.NAME]`` table, checked: its ``kind`` and the options its store takes.

    >>> from admission.policies import DEFAULT
    >>> store_configs({"cache": {"kind": "redis", "url": "redis://app:s3cret@cache:6379/0"}},
    ...               DEFAULT, {})
    {'cache': StoreConfig('redis', url='redis://app:***@cache:6379/0')}
    """

    kind: str
    options: Mapping[str, Any]
    """The store's keyword arguments (a URL or DSN with its password: never shown)."""

    @property
    def network(self) -> bool:
        """Whether its limits live on a server (async only; see `NETWORK_KINDS`)."""
        return STORE_KINDS[self.kind].network

    def __repr__(self) -> str:
        secret = STORE_KINDS[self.kind].url
        shown = (
            f"{key}={redact_dsn(value) if key == secret else value!r}"
            for key, value in self.options.items()
        )
        return f"StoreConfig({', '.join((repr(self.kind), *shown))})"


def _from_environment(
    table: dict[str, Any], option: str, prefix: str, environ: Mapping[str, str]
) -> str:
    """Where a table's ``<option>`` comes from: the option itself, or ``<option>_env`` names
    the environment variable that holds it (exactly one of the two); returns the key to
    blame for a bad value."""
    variable_key = f"{option}_env"
    if (option in table) == (variable_key in table):
        raise ConfigError(
            f"expected exactly one of {option} (the URL) or {variable_key} (the environment "
            "variable that holds it)",
            key=prefix[:-1],
        )
    if option in table:
        return f"{prefix}{option}"
    variable = _text(table.pop(variable_key), f"{prefix}{variable_key}")
    value = environ.get(variable)
    if not value:
        state = "is not set" if value is None else "is empty"
        raise ConfigError(
            f"the environment variable {variable} {state}", key=f"{prefix}{variable_key}"
        )
    table[option] = value
    return f"{prefix}{variable_key}"


def store_configs(
    tables: Mapping[str, Any], policies: PolicySet, environ: Mapping[str, str]
) -> dict[str, StoreConfig]:
    """The ``[stores.NAME]`` tables, checked; ``url_env``/``dsn_env`` read from ``environ``.

    >>> from admission.policies import DEFAULT
    >>> store_configs({"local": {"kind": "shared_memory", "capacity": 64}}, DEFAULT, {})
    {'local': StoreConfig('shared_memory', capacity=64, name='local')}
    >>> store_configs({"local": {"kind": "shared-memory"}}, DEFAULT, {})
    Traceback (most recent call last):
    admission.errors.ConfigError: stores.local.kind: expected one of: shared_memory, memory, ...
    """
    out: dict[str, StoreConfig] = {}
    for name, table in tables.items():
        prefix = f"stores.{name}."
        if not isinstance(table, Mapping):
            raise ConfigError(f"expected a table, got {table!r}", key=prefix[:-1])
        fields = dict(table)
        kind = fields.pop("kind", None)
        if not isinstance(kind, str) or kind not in STORE_KINDS:
            suggestion = hint(kind.replace("-", "_"), STORE_KINDS) if isinstance(kind, str) else ""
            found = "nothing" if kind is None else repr(kind)
            raise ConfigError(
                f"expected one of: {', '.join(STORE_KINDS)}, got {found}{suggestion}",
                key=f"{prefix}kind",
            )
        spec = STORE_KINDS[kind]
        known = ["kind", *spec.options]
        if spec.url is not None:
            known.append(f"{spec.url}_env")
        for key in fields:
            if key not in known:
                raise ConfigError(
                    f"unknown key{hint(str(key), known)}; a {kind} store takes: {', '.join(known)}",
                    key=f"{prefix}{key}",
                )
        blame: dict[str, str] = {}
        if spec.url is not None:
            blame[spec.url] = _from_environment(fields, spec.url, prefix, environ)
        options = {
            key: spec.options[key](value, blame.get(key, f"{prefix}{key}"))
            for key, value in fields.items()
        }
        if kind == "shared_memory" and "name" not in options:
            # The segment is named after the table unless told otherwise.
            options["name"] = _segment_name(name, f"{prefix}name (default: the table's name)")
        out[name] = StoreConfig(kind, MappingProxyType(options))
    return out


PARSERS: Mapping[str, Parser] = MappingProxyType(
    {
        "stores": store_configs,
        "pools": pool_configs,
        "breakers": breaker_policies,
        "retries": retry_policies,
    }
)
"""The parser of each section, by the table's name at the top of the file (``breakers``
before ``retries``: a retry names its breaker)."""

ConnectionBlock = _ConnectionBlock
"""What ``manager.connection(name)`` returns: ``async with`` it for a connection."""


class Section(Protocol):
    """What a manager keeps for one section of its configuration."""

    def prepare(
        self, settings: Mapping[str, Any], source: str, first: bool
    ) -> Callable[[], None]: ...
    async def open(self) -> None: ...
    async def aclose(self) -> None: ...


def sections(clock: _Clock = None) -> dict[str, Section]:
    """A new manager's sections, one of each kind, by the table's name, in the order they
    are prepared (``stores`` first: the limits' entries are built in them; ``breakers``
    before ``retries``, which use them). ``clock``: the manager's, given to every breaker,
    retry and retry budget."""
    breakers = _Breakers(clock)
    return {
        "stores": _Stores(),
        "pools": _Pools(),
        "breakers": breakers,
        "retries": _Retries(breakers, clock),
    }


def _nothing() -> None:
    pass


@final
class _Pools:
    """The ``[pools]`` tables: one `PoolManager`, made by the first configuration (the
    manager's construction) and kept across reloads, which may change only its live settings:
    a pool is never dropped by a reload."""

    __slots__ = ("manager",)

    def __init__(self) -> None:
        self.manager: PoolManager | None = None

    def prepare(
        self, settings: Mapping[str, PoolConfig], source: str, first: bool
    ) -> Callable[[], None]:
        manager = self.manager
        if manager is None:
            if not settings:
                return _nothing
            if not first:
                raise ConfigError(
                    "pools cannot be added by a reload: restart to apply",
                    key="pools",
                    source=source,
                )
            made = PoolManager(settings)

            def keep() -> None:
                self.manager = made

            return keep
        if not settings:
            raise ConfigError(
                "the pools cannot be removed by a reload: restart to apply",
                key="pools",
                source=source,
            )
        try:
            manager.reconfigure(settings, check_only=True)
        except ValueError as exc:
            raise ConfigError(str(exc), key="pools", source=source) from None
        return lambda: manager.reconfigure(settings)  # checked: only live settings change

    async def open(self) -> None:
        if self.manager is not None:
            await self.manager.open()

    async def aclose(self) -> None:
        if self.manager is not None:
            await self.manager.close()


def _pools(of: Mapping[str, Section]) -> _Pools:
    section = of["pools"]
    assert isinstance(section, _Pools)
    return section


def pool_manager(of: Mapping[str, Section], source: str) -> PoolManager:
    """The `PoolManager` of a manager's sections; `UnknownPool` if none is configured."""
    manager = _pools(of).manager
    if manager is None:
        raise UnknownPool("", f"no pool is configured ({source} has no [pools.<name>] table)")
    return manager


def connection(of: Mapping[str, Section], name: str, source: str) -> ConnectionBlock:
    """``async with`` it for a connection of the pool ``name``; `UnknownPool` if none."""
    manager = _pools(of).manager
    if manager is None:
        raise UnknownPool(
            name,
            f"no pool named {name!r}: no pool is configured (add a [pools.{name}] table "
            f"to {source})",
        )
    return manager.connection(name)


# ---------------------------------------------------------------------------------------------
# [stores.NAME]: the stores, and what a reload does to them
# ---------------------------------------------------------------------------------------------

# The argument a store's constructor names first in its messages ("timeout must be ...").
_STORE_ARGUMENT = re.compile(r"^([a-z_]+) ")


def _open_store(name: str, settings: StoreConfig, source: str) -> Store:
    """The store of a ``[stores.NAME]`` table; `ConfigError` (naming the table's key) when
    its class, its driver or the place it names cannot be used."""
    spec = STORE_KINDS[settings.kind]
    key = f"stores.{name}"
    try:
        make = getattr(importlib.import_module(spec.module), spec.cls)
    except ModuleNotFoundError as exc:
        if exc.name != spec.module:
            raise ConfigError(str(exc), key=f"{key}.kind", source=source) from None
        raise ConfigError(
            f"this version of admission has no {settings.kind} store ({spec.module})",
            key=f"{key}.kind",
            source=source,
        ) from None
    try:
        store: Store = make(**settings.options)
    except ImportError as exc:  # its driver: "pip install 'admission[redis]'"
        raise ConfigError(str(exc), key=f"{key}.kind", source=source) from None
    except (TypeError, ValueError, RuntimeError, OSError) as exc:
        # The stores' own checks, and the OS's (a segment of another version, no /dev/shm):
        # their messages never show a password.
        found = _STORE_ARGUMENT.match(str(exc))
        field = found.group(1) if found and found.group(1) in spec.options else None
        raise ConfigError(str(exc), key=f"{key}.{field}" if field else key, source=source) from None
    return store


@final
class _Stores:
    """The ``[stores]`` tables: a store per table, made when the table first appears.

    A reload keeps a store whose table did not change (the limits in it keep their
    limiters); one whose table changed is made anew, and the limits in it are rebuilt in the
    new one. A network store a reload replaced or dropped stays open for the requests still
    using its limiters, and is closed with the others by `aclose`. A shared-memory segment
    is never removed by the manager (see `admission.stores.SharedMemory`'s lifecycle)."""

    __slots__ = ("in_force", "pending", "retired")

    def __init__(self) -> None:
        self.in_force: Mapping[str, tuple[StoreConfig, Store]] = {}
        self.pending = self.in_force
        """What the reload being prepared puts in force (the limits are built in these)."""
        self.retired: list[NetworkStore] = []

    def prepare(
        self, settings: Mapping[str, StoreConfig], source: str, first: bool
    ) -> Callable[[], None]:
        new: dict[str, tuple[StoreConfig, Store]] = {}
        for name, s in settings.items():
            kept = self.in_force.get(name)
            new[name] = kept if kept and kept[0] == s else (s, _open_store(name, s, source))
        self.pending = new

        def put_in_force() -> None:
            kept = {id(store) for _, store in new.values()}
            for _, store in self.in_force.values():
                if isinstance(store, NetworkStore) and id(store) not in kept:
                    self.retired.append(store)
            self.in_force = new

        return put_in_force

    async def open(self) -> None:
        pass

    async def aclose(self) -> None:
        stores = [s for _, s in self.in_force.values() if isinstance(s, NetworkStore)]
        stores += self.retired
        self.retired = []
        errors = []
        for store in stores:  # each one, whatever the others do
            try:
                await store.aclose()
            except Exception as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise ExceptionGroup("admission: closing the network stores failed", errors)


def _stores(of: Mapping[str, Section]) -> _Stores:
    section = of["stores"]
    assert isinstance(section, _Stores)
    return section


def pending_store(of: Mapping[str, Section], name: str) -> Store:
    """The store of the ``[stores.NAME]`` table ``name`` in the configuration being put in
    force (the configuration's check made sure it has that table)."""
    return _stores(of).pending[name][1]


def store(of: Mapping[str, Section], name: str, source: str) -> Store:
    """The store of the ``[stores.NAME]`` table ``name``; `UnknownLimit` if none."""
    found = _stores(of).in_force.get(name)
    if found is None:
        raise _unknown("stores", name, _stores(of).in_force, source)
    return found[1]


# ---------------------------------------------------------------------------------------------
# [breakers.NAME] and [retries.NAME]: the objects, and what a reload does to them
# ---------------------------------------------------------------------------------------------


def _new_breaker(name: str | None, s: BreakerPolicy, clock: _Clock) -> CircuitBreaker:
    return CircuitBreaker(
        name,
        failure_rate=s.failure_rate,
        window=s.window if isinstance(s.window, int) else timedelta(seconds=s.window),
        min_calls=s.min_calls,
        slow_call_duration=s.slow_call_duration,
        slow_call_rate=s.slow_call_rate,
        open_for=s.open_for,
        open_for_max=s.open_for_max,
        half_open_calls=s.half_open_calls,
        clock=clock,
    )


def _new_budget(b: BudgetPolicy, clock: _Clock) -> RetryBudget:
    return RetryBudget(b.ratio, b.min_per_second, b.window, clock=clock)


def _new_retry(
    name: str | None,
    s: RetryPolicy,
    budget: RetryBudget | None,
    breaker: CircuitBreaker | None,
    clock: _Clock,
) -> Retry:
    if budget is None and s.budget is not None:
        budget = _new_budget(s.budget, clock)
    return Retry(
        s.attempts,
        deadline=s.deadline,
        base=s.base,
        cap=s.cap,
        jitter=s.jitter,  # type: ignore[arg-type]  # checked by the parser
        budget=budget,
        name=name,
        breaker=breaker,
        clock=clock,
    )


@final
class _Breakers:
    """The ``[breakers]`` tables: a `CircuitBreaker` per table, named after it.

    A reload keeps a breaker whose settings did not change (its state, window and counts go
    on); one whose settings changed is replaced by a new breaker, closed with an empty window
    (the old verdict was reached under the old thresholds); one whose table is gone is
    dropped. The replaced and dropped breakers keep working for code that kept them."""

    __slots__ = ("clock", "in_force", "pending")

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock
        self.in_force: Mapping[str, tuple[BreakerPolicy, CircuitBreaker]] = {}
        self.pending = self.in_force
        """What the reload being prepared puts in force (the retries' sections read it)."""

    def prepare(
        self, settings: Mapping[str, BreakerPolicy], source: str, first: bool
    ) -> Callable[[], None]:
        new: dict[str, tuple[BreakerPolicy, CircuitBreaker]] = {}
        for name, s in settings.items():
            kept = self.in_force.get(name)
            new[name] = kept if kept and kept[0] == s else (s, _new_breaker(name, s, self.clock))
        self.pending = new

        def put_in_force() -> None:
            self.in_force = new

        return put_in_force

    async def open(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


@final
class _Retries:
    """The ``[retries]`` tables: a `Retry` per table, named after it, with its own
    `RetryBudget` and the breaker its table names.

    A `Retry` keeps no state between calls but its counters, so a reload replaces one whose
    settings (or breaker) changed; its `RetryBudget` is kept when its settings did not change
    (the calls and retries of its window count on)."""

    __slots__ = ("breakers", "clock", "in_force")

    def __init__(self, breakers: _Breakers, clock: _Clock) -> None:
        self.breakers = breakers
        self.clock = clock
        self.in_force: Mapping[str, tuple[RetryPolicy, Retry]] = {}

    def prepare(
        self, settings: Mapping[str, RetryPolicy], source: str, first: bool
    ) -> Callable[[], None]:
        breakers = self.breakers.pending
        new: dict[str, tuple[RetryPolicy, Retry]] = {}
        for name, s in settings.items():
            breaker = None
            if s.breaker is not None:
                found = breakers.get(s.breaker)
                if found is None:
                    known = ", ".join(breakers) or "none"
                    raise ConfigError(
                        f"no [breakers.{s.breaker}] table{hint(s.breaker, breakers)}; "
                        f"known: {known}",
                        key=f"retries.{name}.breaker",
                        source=source,
                    )
                breaker = found[1]
            kept = self.in_force.get(name)
            if kept and kept[0] == s and kept[1].breaker is breaker:
                new[name] = kept
                continue
            budget = kept[1].budget if kept and kept[0].budget == s.budget else None
            new[name] = (s, _new_retry(name, s, budget, breaker, self.clock))

        def put_in_force() -> None:
            self.in_force = new

        return put_in_force

    async def open(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def _unknown(kind: str, name: str, known: Mapping[str, object], source: str) -> UnknownLimit:
    listed = ", ".join(sorted(known)) or f"none ({source} has no [{kind}.<name>] table)"
    singular = "retry" if kind == "retries" else kind[:-1]
    return UnknownLimit(name, f"no {singular} named {name!r}{hint(name, known)}; known: {listed}")


def breaker(of: Mapping[str, Section], name: str, source: str) -> CircuitBreaker:
    """The breaker of the ``[breakers.NAME]`` table ``name``; `UnknownLimit` if none."""
    section = of["breakers"]
    assert isinstance(section, _Breakers)
    found = section.in_force.get(name)
    if found is None:
        raise _unknown("breakers", name, section.in_force, source)
    return found[1]


def retry(of: Mapping[str, Section], name: str, source: str) -> Retry:
    """The retry of the ``[retries.NAME]`` table ``name``; `UnknownLimit` if none."""
    section = of["retries"]
    assert isinstance(section, _Retries)
    found = section.in_force.get(name)
    if found is None:
        raise _unknown("retries", name, section.in_force, source)
    return found[1]
