"""Configuration of named limits: from TOML, YAML or JSON files, a dict, or the environment.

The schema (every table optional; strings for durations and rates everywhere)::

    [defaults]              # overrides of the "default" policy, inherited by all the others
    timeout = "30s"

    [policies.batch]        # add a policy, or change a built-in one (see admission.policies)
    parent = "default"      # a new policy inherits "default" unless told otherwise
    concurrency = 3

    [limits.openai]         # a named limit: inherits its policy, overrides any field
    policy = "openai"       # default: "default"
    concurrency = 20        # calls in flight ("none": unbounded, still counted)
    rate = "60/min"         # requests per period ("none": no rate limit)
    burst = 10              # requests at once on a full bucket (default: one period's worth)
    tokens = "90000/min"    # tokens per period, charged by manager.limit("openai", tokens=n)
    token_burst = 90000     # capacity of the tokens bucket (default: one period's worth)
    timeout = "60s"         # admission wait before AcquireTimeout ("none": no limit)
    alert_threshold = 0.8   # utilization that alerts on (0.8 or "80%")

    [pools.rag]             # an asyncpg pool the manager owns (see admission.pools.settings)
    dsn_env = "RAG_DSN"     # the DSN, from this environment variable (or dsn = "postgresql://...")
    policy = "database"     # default; its timeout is the pool's acquire_timeout unless set
    max_size = 20

    [breakers.openai]       # a CircuitBreaker: manager.breaker("openai")
    policy = "llm"          # its defaults (admission.policies.BREAKER_DEFAULTS); any field:
    window = "60s"          # failure_rate, window, min_calls, slow_call_duration,
    open_for = "30s"        # slow_call_rate, open_for, open_for_max, half_open_calls

    [stores.local]          # where limits that name it keep their state (see admission.manager)
    kind = "shared_memory"  # or "memory" (this process; for tests), "redis", "postgres"
    capacity = 256          # shared_memory: name (default: the table's), capacity, mode;
                            # redis: url or url_env, timeout, prefix; postgres: dsn or
                            # dsn_env, schema, timeout, create; memory: timeout, latency

    [limits.openai]         # ...
    store = "local"         # its semaphore and buckets live in that store (also in a policy)

    [retries.openai]        # a Retry: manager.retry("openai")
    policy = "llm"          # its defaults (admission.policies.RETRY_DEFAULTS); any field:
    attempts = 5            # attempts, deadline, base, cap, jitter, budget, breaker
    breaker = "openai"      # never calls through that open breaker
    budget = { ratio = 0.2, min_per_second = 10, window = "10s" }   # or "none"

Environment variables ``ADMISSION_<NAME>_<FIELD>`` override a field of a configured limit,
e.g. ``ADMISSION_OPENAI_RATE=30/min`` or ``ADMISSION_RAG_CONCURRENCY=4``; the name is the
limit's name upper-cased with every character other than letters and digits turned into ``_``.
``ADMISSION_DEFAULTS_<FIELD>`` overrides ``[defaults]``; ``ADMISSION_CONFIG`` names the file
that `Config.from_env` reads. A variable is only read when ``ADMISSION_`` is followed by a
configured limit's name (or ``DEFAULTS``) and ``_``: it never adds a limit, and any other
``ADMISSION_*`` variable (``ADMISSION_API_KEY``) is ignored; an unknown field after a known
name (``ADMISSION_RAG_SPEED``) is a `ConfigError` naming the variable.

Errors are `admission.ConfigError` (a `ValueError`) and say where, which key, what was
expected and what was found:

>>> Config.from_dict({"limits": {"rag": {"policy": "database", "concurrency": 0}}})
Traceback (most recent call last):
admission.errors.ConfigError: <dict>: limits.rag.concurrency: expected an integer from 1 ...
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from admission._sections import NETWORK_KINDS, PARSERS
from admission.errors import ConfigError
from admission.policies import (
    DEFAULT,
    FIELDS,
    STORE_FIELDS,
    Policy,
    PolicySet,
    coerce_fields,
    hint,
)

if TYPE_CHECKING:
    from admission._sections import StoreConfig
    from admission.policies import BreakerPolicy, RetryPolicy
    from admission.pools.config import PoolConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["ENV_PREFIX", "Config"]

ENV_PREFIX = "ADMISSION_"
"""Prefix of the environment variables that override the configuration."""

_SECTIONS = ("defaults", "policies", "limits", *PARSERS)
_NAME = re.compile(r"[A-Za-z0-9_.:-]+")
_ENV_FIELDS = ("policy", *FIELDS)
# Longest first, so that ..._TOKEN_BURST is the field token_burst, not a limit "x_token".
_ENV_FIELDS_BY_LENGTH = sorted(_ENV_FIELDS, key=len, reverse=True)

Environ = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Config:
    """A validated configuration: the policies in force and every named limit, resolved.

    >>> cfg = Config.from_dict({
    ...     "defaults": {"timeout": "20s"},
    ...     "limits": {
    ...         "openai": {"policy": "openai", "tokens": "90000/min"},
    ...         "rag": {"policy": "database", "concurrency": 10},
    ...         "misc": {},
    ...     },
    ... })
    >>> cfg.limits["openai"].rate, cfg.limits["openai"].timeout
    (Rate(count=60, per=60.0), 60.0)
    >>> cfg.limits["misc"].parent, cfg.limits["misc"].timeout
    ('default', 20.0)
    """

    limits: Mapping[str, Policy]
    """Every named limit, resolved: its policy's values with its own overrides."""
    policies: PolicySet = field(default_factory=lambda: DEFAULT)
    """The policies in force (`admission.policies.DEFAULT` plus the file's changes)."""
    source: str = "<dict>"
    """Where it came from, as shown in errors: a path, ``<dict>`` or ``environment``."""
    path: Path | None = None
    """The file it was read from, if any (what `reread` and the file watcher read)."""
    env: bool | Environ = field(default=False, repr=False)
    """Whether environment overrides apply: ``True`` for ``os.environ``, or a mapping."""
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    """The other tables, each checked by its section (``pools``: see `pools`), by name."""

    @property
    def pools(self) -> Mapping[str, PoolConfig]:
        """The ``[pools.NAME]`` tables, checked (their ``dsn_env`` read from the mapping given
        as ``env``, else ``os.environ``). DSNs are shown redacted."""
        return self.sections.get("pools", MappingProxyType({}))

    @property
    def stores(self) -> Mapping[str, StoreConfig]:
        """The ``[stores.NAME]`` tables, checked (their ``url_env``/``dsn_env`` read as
        ``pools`` reads ``dsn_env``). URLs and DSNs are shown redacted."""
        return self.sections.get("stores", MappingProxyType({}))

    @property
    def breakers(self) -> Mapping[str, BreakerPolicy]:
        """The ``[breakers.NAME]`` tables, each resolved over its policy's defaults."""
        return self.sections.get("breakers", MappingProxyType({}))

    @property
    def retries(self) -> Mapping[str, RetryPolicy]:
        """The ``[retries.NAME]`` tables, each resolved over its policy's defaults."""
        return self.sections.get("retries", MappingProxyType({}))

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, env: bool | Environ = False, source: str = "<dict>"
    ) -> Config:
        """Validates ``data`` (the schema above as nested dicts), plus environment overrides.

        >>> data = {"limits": {"x": {"rate": "10/s"}}}
        >>> Config.from_dict(data).limits["x"].rate
        Rate(count=10, per=1.0)
        >>> Config.from_dict(data, env={"ADMISSION_X_RATE": "5/s"}).limits["x"].rate
        Rate(count=5, per=1.0)
        """
        return _build(data, source=source, env=env, path=None)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, env: bool | Environ = True) -> Config:
        """Reads a ``.toml`` file (or ``.yaml``/``.yml`` with the ``yaml`` extra, or ``.json``).

        Environment overrides apply by default (``env=False`` to ignore them), so a deployment
        can change a limit without editing the file.
        """
        path = Path(path)
        return _build(_read(path), source=str(path), env=env, path=path)

    @classmethod
    def from_env(cls, environ: Environ | None = None) -> Config:
        """The file named by ``ADMISSION_CONFIG`` (if set) with every ``ADMISSION_*`` override.

        >>> Config.from_env({"ADMISSION_DEFAULTS_TIMEOUT": "5s"}).policies["default"].timeout
        5.0
        """
        env: bool | Environ = True if environ is None else environ
        variables = os.environ if environ is None else environ
        path = variables.get(f"{ENV_PREFIX}CONFIG")
        if path:
            return cls.from_file(path, env=env)
        return _build({}, source="environment", env=env, path=None)

    def reread(self) -> Config:
        """The same source read again (the file, and the environment if it applied).

        Raises `ConfigError` when the configuration did not come from a file.
        """
        if self.path is None:
            raise ConfigError(
                f"not read from a file, so it cannot be read again (from {self.source})"
            )
        return Config.from_file(self.path, env=self.env)


def _read(path: Path) -> Mapping[str, Any]:
    suffix = path.suffix.lower()
    data = path.read_bytes()
    source = str(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"expected UTF-8 text: {exc}", source=source) from None
    loaded: object
    kind = "YAML" if suffix in (".yaml", ".yml") else "JSON" if suffix == ".json" else "TOML"
    try:
        if kind == "YAML":
            loaded = _read_yaml(text, source)
        elif kind == "JSON":
            loaded = json.loads(text)
        else:
            loaded = tomllib.loads(text)
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError(f"invalid {kind}: nested too deeply", source=source) from None
    except ValueError as exc:
        # JSONDecodeError, TOMLDecodeError, and the parsers' int() of a number with more
        # digits than Python converts (sys.get_int_max_str_digits()).
        raise ConfigError(f"invalid {kind}: {exc}", source=source) from None
    if loaded is None:  # an empty YAML document
        return {}
    if not isinstance(loaded, Mapping):
        raise ConfigError(
            f"expected a table at the top, got {type(loaded).__name__}", source=source
        )
    return loaded


def _read_yaml(text: str, source: str) -> object:
    try:
        import yaml
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            f"reading YAML ({source}) needs PyYAML: pip install 'admission[yaml]'", name="yaml"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"invalid YAML{where}: {exc.problem}", source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", source=source) from None


def _table(value: object, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"expected a table, got {value!r}", key=key)
    for name in value:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(
                f"expected names of letters, digits, '_', '.', ':' or '-', got {name!r}", key=key
            )
    return value


def _build(
    data: Mapping[str, Any], *, source: str, env: bool | Environ, path: Path | None
) -> Config:
    origins: dict[str, str] = {}  # key -> the environment variable that set it
    try:
        top = _table(data, "")
        if env is not False:
            top, origins = _with_env(top, os.environ if env is True else env)
        return _validate(top, source=source, env=env, path=path)
    except ConfigError as exc:
        raise exc.at(origins.get(exc.key or "", source)) from None


def _validate(
    top: Mapping[str, Any], *, source: str, env: bool | Environ, path: Path | None
) -> Config:
    for key in top:
        if key not in _SECTIONS:
            raise ConfigError(
                f"unknown key{hint(key, _SECTIONS)}; expected one of: {', '.join(_SECTIONS)}",
                key=key,
            )
    overrides = {
        name: _table(table, f"policies.{name}")
        for name, table in _table(top.get("policies", {}), "policies").items()
    }
    defaults = coerce_fields(_table(top.get("defaults", {}), "defaults"), "defaults.")
    if defaults:
        overrides["default"] = {**defaults, **overrides.get("default", {})}
    policies = DEFAULT.with_overrides(overrides) if overrides else DEFAULT
    limits: dict[str, Policy] = {}
    own_fields: dict[str, set[str]] = {}
    for name, table in _table(top.get("limits", {}), "limits").items():
        fields = dict(_table(table, f"limits.{name}"))
        parent = fields.pop("policy", "default")
        if not isinstance(parent, str) or parent not in policies:
            suggestion = hint(parent, policies) if isinstance(parent, str) else ""
            raise ConfigError(
                f"expected one of the policies: {', '.join(policies)}, got {parent!r}{suggestion}",
                key=f"limits.{name}.policy",
            )
        own = coerce_fields(fields, f"limits.{name}.")
        limits[name] = dataclasses.replace(policies[parent], name=name, parent=parent, **own)
        own_fields[name] = set(own)
    environ = env if isinstance(env, Mapping) else os.environ
    sections = {
        name: MappingProxyType(dict(parse(_table(top.get(name, {}), name), policies, environ)))
        for name, parse in PARSERS.items()
    }
    stores = sections["stores"]
    for name, policy_table in overrides.items():
        if "store" in policy_table:  # a policy that inherits it is checked where it is set
            where = "defaults" if name == "default" and "store" in defaults else f"policies.{name}"
            _check_store(policies[name], True, where, stores)
    for name, limit in limits.items():
        _check_store(limit, "store" in own_fields[name], f"limits.{name}", stores)
        _check_store_fields(limit, own_fields[name], stores)
    return Config(MappingProxyType(limits), policies, source, path, env, MappingProxyType(sections))


def _check_store(policy: Policy, own: bool, where: str, stores: Mapping[str, StoreConfig]) -> None:
    """That the store ``policy`` names (itself, if ``own``, else by inheritance) has a table."""
    if policy.store is None or policy.store in stores:
        return
    inherited = "" if own else f" (inherited from the policy {policy.parent!r})"
    known = ", ".join(stores) or "none"
    raise ConfigError(
        f"no [stores.{policy.store}] table{hint(policy.store, stores)}{inherited}; known: {known}",
        key=f"{where}.store",
    )


def _check_store_fields(limit: Policy, own: set[str], stores: Mapping[str, StoreConfig]) -> None:
    """The network stores' fields make sense for the limit: those it sets itself need a
    network store (inherited ones are ignored elsewhere), and ``on_store_error = "local"``
    needs ``instances``."""
    settings = None if limit.store is None else stores[limit.store]
    if settings is not None and settings.network:
        if limit.on_store_error == "local" and limit.instances is None:
            raise ConfigError(
                'on_store_error = "local" needs instances: the number of processes sharing '
                "the limit, by which each one's in-process fallback divides it",
                key=f"limits.{limit.name}.instances",
            )
        return
    for field_name in STORE_FIELDS:
        if field_name in own:
            where = (
                "the limit is in no store"
                if settings is None
                else f"its store {limit.store!r} is {settings.kind}"
            )
            raise ConfigError(
                f"only a limit in a network store ({', '.join(NETWORK_KINDS)}) has "
                f"{field_name}, and {where}",
                key=f"limits.{limit.name}.{field_name}",
            )


def env_name(name: str) -> str:
    """The ``<NAME>`` part of a limit's environment variables.

    >>> env_name("openai-batch")
    'OPENAI_BATCH'
    """
    return re.sub(r"[^0-9A-Za-z]", "_", name).upper()


def _with_env(top: Mapping[str, Any], environ: Environ) -> tuple[dict[str, Any], dict[str, str]]:
    """``top`` with every ``ADMISSION_<NAME>_<FIELD>`` applied; and which key came from where."""
    merged: dict[str, Any] = dict(top)
    limits = {
        name: dict(_table(t, f"limits.{name}"))
        for name, t in _table(top.get("limits", {}), "limits").items()
    }
    defaults = dict(_table(top.get("defaults", {}), "defaults"))
    by_env_name: dict[str, str] = {}
    clashes: dict[str, list[str]] = {}
    for name in limits:
        if by_env_name.setdefault(env_name(name), name) != name:
            clashes.setdefault(env_name(name), [by_env_name[env_name(name)]]).append(name)
    origins: dict[str, str] = {}
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable == f"{ENV_PREFIX}CONFIG":
            continue
        rest = variable[len(ENV_PREFIX) :]
        split = _split_env(rest, (*by_env_name, *clashes, "DEFAULTS"), variable)
        if split is None:
            continue  # not about a known limit (ADMISSION_API_KEY): someone else's variable
        name, field_name = split
        value = environ[variable]
        if name in clashes:
            raise ConfigError(
                f"limits {' and '.join(map(repr, clashes[name]))} have the same environment "
                f"name {name}: rename one",
                source=f"environment variable {variable}",
            )
        if name == "DEFAULTS":
            if field_name == "policy":
                raise ConfigError(
                    "the defaults have no policy: they change the default policy itself",
                    source=f"environment variable {variable}",
                )
            defaults[field_name] = value
            key = f"defaults.{field_name}"
        else:
            limit = by_env_name[name]
            limits[limit][field_name] = value
            key = f"limits.{limit}.{field_name}"
        origins[key] = f"environment variable {variable}"
    if defaults:
        merged["defaults"] = defaults
    if limits:
        merged["limits"] = limits
    return merged, origins


def _split_env(rest: str, known: Iterable[str], variable: str) -> tuple[str, str] | None:
    """``OPENAI_TOKEN_BURST`` -> ``("OPENAI", "token_burst")`` when ``OPENAI`` is known.

    ``None`` when ``rest`` does not start with a known name and ``_`` (the variable is not
    about a configured limit); a `ConfigError` when it does but the field is unknown.
    """
    prefixes = sorted((k for k in known if rest.startswith(f"{k}_")), key=len, reverse=True)
    for name in prefixes:
        field_name = rest[len(name) + 1 :].lower()
        if field_name in _ENV_FIELDS:
            return name, field_name
    if not prefixes:
        return None
    name = prefixes[0]
    field_name = rest[len(name) + 1 :]
    what = "[defaults]" if name == "DEFAULTS" else f"the limit {name}"
    raise ConfigError(
        f"{what} has no field {field_name}{hint(field_name.lower(), _ENV_FIELDS)}; "
        f"expected {ENV_PREFIX}{name}_<FIELD> with FIELD one of: "
        f"{', '.join(f.upper() for f in _ENV_FIELDS)}",
        source=f"environment variable {variable}",
    )
