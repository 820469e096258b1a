"""Policies: defaults for a kind of work (LLM calls, database queries, stress tests, ...).

A `Policy` is a frozen set of limits. Policies inherit from a parent and override fields; a
named limit in the configuration inherits a policy the same way and can override any field.
`DEFAULT` holds the built-in policies, the remediation plan's numbers:

>>> import admission as adm
>>> print(adm.policies.DEFAULT.table())
| policy | parent | concurrency | rate | tokens | timeout | alert |
| --- | --- | --- | --- | --- | --- | --- |
| default | - | 10 | none | none | 30s | 0.8 |
| api | default | 20 | none | none | 30s | 0.8 |
| llm | api | 20 | none | none | 60s | 0.8 |
| openai | llm | 20 | 60/min | none | 60s | 0.8 |
| anthropic | llm | 20 | 50/min | none | 60s | 0.8 |
| database | default | 10 | none | none | 10s | 0.8 |
| stress | default | 5 | none | none | 30s | 0.8 |

- ``default``: a semaphore of 10, 30 s timeout, utilization alert at 0.8. Everything else
  derives from it, so overriding ``default`` (the ``[defaults]`` table) changes every policy
  that does not set that field itself.
- ``api``: outbound API calls, 20 in flight. ``llm``: LLM calls, 60 s timeout.
- ``openai``: 60 requests/min; ``anthropic``: 50 requests/min. Add ``tokens = "90000/min"``
  to a limit to bound tokens per minute as well (both are then taken together, all or nothing).
- ``database``: 10 s timeout. ``stress``: stress tests, 5 in flight.

Policies also give the defaults of the ``[retries.NAME]`` and ``[breakers.NAME]`` tables
(`RetryPolicy`, `BreakerPolicy`): a table takes those of its policy, or of the nearest
ancestor that has some (``openai`` and ``anthropic`` take ``llm``'s), and overrides any field.

>>> print(adm.policies.retry_table())
| policy | attempts | deadline | base | cap | jitter | budget |
| --- | --- | --- | --- | --- | --- | --- |
| default | 3 | 30s | 100ms | 10s | full | 0.2 + 10/s over 10s |
| llm | 5 | 120s | 1s | 30s | full | 0.2 + 10/s over 10s |
| database | 3 | 10s | 50ms | 2s | full | 0.2 + 10/s over 10s |

Every one retries what `admission.retry.transient` retries: connection errors, timeouts,
every ``httpx.TransportError`` but the client's own mistakes, HTTP 408, 425, 429, 500, 502,
503, 504 and anything with a ``retry_after`` (waiting at least as long as the server said),
with full jitter (the cap applied before it), within a `admission.RetryBudget` of 20 % of
the calls (plus 10 a second). Breakers have one built-in policy, ``default`` (the
`admission.CircuitBreaker` defaults: 50 % of the last 100 calls, after 20, open 30 s then
doubling up to 5 minutes, 5 probes), which every policy inherits.

>>> openai = adm.policies.DEFAULT["openai"]
>>> openai.concurrency, str(openai.rate), openai.timeout
(20, '60/min', 60.0)
>>> mine = openai.derive("openai-batch", concurrency=5, tokens="90000/min", timeout="2m")
>>> mine.parent, mine.concurrency, str(mine.rate), str(mine.tokens), mine.timeout
('openai', 5, '60/min', '90000/min', 120.0)
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from admission._native import MAX_PERMITS
from admission.durations import Rate, parse_duration, parse_rate, seconds
from admission.errors import ConfigError

__all__ = [
    "BREAKER_DEFAULTS",
    "DEFAULT",
    "FIELDS",
    "ON_STORE_ERROR",
    "RETRY_DEFAULTS",
    "STORE_FIELDS",
    "BreakerPolicy",
    "BudgetPolicy",
    "Policy",
    "PolicySet",
    "RetryPolicy",
    "retry_table",
]

FIELDS = (
    "concurrency",
    "rate",
    "burst",
    "tokens",
    "token_burst",
    "timeout",
    "alert_threshold",
    "store",
    "on_store_error",
    "instances",
    "lease",
)
"""The fields a policy, a ``[defaults]`` table or a named limit can set."""

STORE_FIELDS = ("on_store_error", "instances", "lease")
"""The fields that apply only to a limit in a network store (``memory``, ``redis``,
``postgres``: see `admission.stores.remote`)."""

ON_STORE_ERROR = ("closed", "open", "local")
"""What a limit in a network store does when the store fails: raise `StoreUnavailable`,
admit, or limit in-process to its share (``instances``)."""


def hint(word: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a known name is close to ``word``, else ``""``."""
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def is_none(value: object) -> bool:
    """Whether a configuration value switches a setting off: ``"none"`` (TOML has no null)
    or a YAML/JSON null."""
    return value is None or (isinstance(value, str) and value.strip().lower() == "none")


# The names config.py allows for a table ([stores.NAME]).
_STORE_NAME = re.compile(r"[A-Za-z0-9_.:-]+")
# ASCII digits only ("²".isdigit() is true), and few enough that int() never refuses them.
_DIGITS = re.compile(r"[0-9]{1,30}")


def _count(value: object, key: str, *, top: int, optional: bool) -> int | None:
    if optional and is_none(value):
        return None
    number: object = value
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        number = int(value.strip())  # environment variables are strings
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= top:
        none = ', or "none"' if optional else ""
        raise ConfigError(f"expected an integer from 1 to {top}{none}, got {value!r}", key=key)
    return number


def _rate(value: object, key: str) -> Rate | None:
    return None if is_none(value) else parse_rate(value, key)  # type: ignore[arg-type]


def _timeout(value: object, key: str) -> float | None:
    return None if is_none(value) else parse_duration(value, key)  # type: ignore[arg-type]


def _store(value: object, key: str) -> str | None:
    if is_none(value):
        return None
    if not isinstance(value, str) or not _STORE_NAME.fullmatch(value):
        raise ConfigError(
            f'expected the name of a [stores.NAME] table, or "none", got {value!r}', key=key
        )
    return value


def _on_store_error(value: object, key: str) -> str:
    if value not in ON_STORE_ERROR:
        suggestion = hint(value, ON_STORE_ERROR) if isinstance(value, str) else ""
        raise ConfigError(
            f"expected one of: {', '.join(ON_STORE_ERROR)}, got {value!r}{suggestion}", key=key
        )
    return str(value)


def _lease(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f'expected a duration such as "30s", got {value!r}', key=key)
    return seconds(value, key, positive=True, config=True)


def _threshold(value: object, key: str) -> float:
    number: object = value
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not 0 < number <= 1:
        raise ConfigError(
            f'expected a fraction in (0, 1] such as 0.8 or "80%", got {value!r}', key=key
        )
    return float(number)


_COERCE: dict[str, Callable[[object, str], object]] = {
    "concurrency": lambda v, k: _count(v, k, top=MAX_PERMITS, optional=True),
    "rate": _rate,
    "burst": lambda v, k: _count(v, k, top=2**53, optional=True),
    "tokens": _rate,
    "token_burst": lambda v, k: _count(v, k, top=2**53, optional=True),
    "timeout": _timeout,
    "alert_threshold": _threshold,
    "store": _store,
    "on_store_error": _on_store_error,
    "instances": lambda v, k: _count(v, k, top=2**31 - 1, optional=True),
    "lease": _lease,
}


def coerce_fields(fields: Mapping[str, object], prefix: str = "") -> dict[str, Any]:
    """Validates policy fields (strings parsed); errors name the key as ``prefix + field``.

    >>> coerce_fields({"rate": "50/m", "timeout": "10s"}, "limits.x.")
    {'rate': Rate(count=50, per=60.0), 'timeout': 10.0}
    >>> coerce_fields({"rat": "50/m"}, "limits.x.")
    Traceback (most recent call last):
    admission.errors.ConfigError: limits.x.rat: unknown key (did you mean 'rate'?); expected ...
    """
    out: dict[str, Any] = {}
    for field, value in fields.items():
        coerce = _COERCE.get(field)
        if coerce is None:
            raise ConfigError(
                f"unknown key{hint(field, FIELDS)}; expected one of: {', '.join(FIELDS)}",
                key=f"{prefix}{field}",
            )
        out[field] = coerce(value, f"{prefix}{field}")
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """Limits for one kind of work. Frozen; `derive` makes a variant.

    Fields given as strings are parsed (``rate="60/min"``, ``timeout="10s"``, ``"none"``).

    >>> p = Policy(name="batch", concurrency=3, rate="100/h", timeout="5m")
    >>> p.concurrency, p.rate, p.timeout, p.alert_threshold
    (3, Rate(count=100, per=3600.0), 300.0, 0.8)
    """

    name: str
    """The policy's (or the named limit's) name."""
    parent: str | None = None
    """The policy it inherits from, if any."""
    concurrency: int | None = 10
    """Calls in flight at once (a semaphore); ``None``: unbounded (still counted)."""
    rate: Rate | None = None
    """Requests per period (a token bucket); ``None``: no request rate limit."""
    burst: int | None = None
    """Requests that may go at once on a full bucket; ``None``: one period's worth."""
    tokens: Rate | None = None
    """Tokens (or any cost unit) per period, charged with ``limit(name, tokens=n)``."""
    token_burst: int | None = None
    """Capacity of the tokens bucket; ``None``: one period's worth."""
    timeout: float | None = 30.0
    """Seconds to wait for admission before `AcquireTimeout`; ``None``: wait as long as needed."""
    alert_threshold: float = 0.8
    """Utilization (in use / limit) above which alerts fire."""
    store: str | None = None
    """The ``[stores.NAME]`` table whose store holds the limit's semaphore and buckets (see
    `admission.manager`); ``None``: this process's memory."""
    on_store_error: str = "closed"
    """In a network store: what the limit does when the store fails (`ON_STORE_ERROR`)."""
    instances: int | None = None
    """In a network store: the processes sharing the limit, by which ``on_store_error =
    "local"`` divides it (required by that mode)."""
    lease: float = 30.0
    """In a network store: seconds a permit's lease lasts unless renewed (a crashed holder's
    permit comes back after it)."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"expected a non-empty string, got {self.name!r}", key="name")
        fields = coerce_fields({f: getattr(self, f) for f in FIELDS}, f"{self.name}.")
        for field, value in fields.items():
            object.__setattr__(self, field, value)

    def fields(self) -> dict[str, Any]:
        """The settable fields (`FIELDS`) and their values."""
        return {f: getattr(self, f) for f in FIELDS}

    def derive(self, name: str, /, **overrides: object) -> Policy:
        """A policy called ``name`` that inherits this one, with ``overrides`` applied.

        >>> DEFAULT["database"].derive("rag", concurrency=4).timeout
        10.0
        """
        return dataclasses.replace(
            self, name=name, parent=self.name, **coerce_fields(overrides, f"{name}.")
        )

    def row(self) -> str:
        """This policy as a row of `PolicySet.table`."""

        def show(value: object) -> str:
            if value is None:
                return "none"
            if isinstance(value, float) and value.is_integer() and value >= 1:
                return f"{int(value)}s"
            return str(value)

        return (
            f"| {self.name} | {self.parent or '-'} | {show(self.concurrency)} | {show(self.rate)} "
            f"| {show(self.tokens)} | {show(self.timeout)} | {self.alert_threshold} |"
        )


@dataclass(frozen=True, slots=True)
class _Spec:
    parent: str | None
    own: Mapping[str, Any]  # the fields this policy sets itself, already validated


class PolicySet(Mapping[str, Policy]):
    """Named policies, each resolved from its parent's values plus its own overrides.

    >>> custom = DEFAULT.with_overrides(
    ...     {"default": {"timeout": "45s"}, "batch": {"concurrency": 2}}
    ... )
    >>> custom["database"].timeout, custom["api"].timeout, custom["llm"].timeout
    (10.0, 45.0, 60.0)
    >>> custom["batch"].parent, custom["batch"].concurrency, custom["batch"].timeout
    ('default', 2, 45.0)
    """

    __slots__ = ("_resolved", "_specs")

    def __init__(self, specs: Mapping[str, tuple[str | None, Mapping[str, object]]]) -> None:
        self._specs: Mapping[str, _Spec] = MappingProxyType(
            {
                name: _Spec(parent, coerce_fields(own, f"policies.{name}."))
                for name, (parent, own) in specs.items()
            }
        )
        resolved: dict[str, Policy] = {}
        for name in self._specs:
            self._resolve(name, resolved)
        self._resolved: Mapping[str, Policy] = MappingProxyType(
            {name: resolved[name] for name in self._specs}
        )

    def _resolve(self, name: str, resolved: dict[str, Policy]) -> Policy:
        # A loop, not recursion: a parent chain thousands deep is a ConfigError at worst,
        # never a RecursionError.
        chain: list[str] = []
        on_chain: set[str] = set()
        current = name
        while current not in resolved:
            if current in on_chain:
                cycle = " -> ".join((*chain[chain.index(current) :], current))
                raise ConfigError(f"inheritance cycle: {cycle}", key=f"policies.{chain[-1]}.parent")
            chain.append(current)
            on_chain.add(current)
            parent = self._specs[current].parent
            if parent is None:
                break
            if parent not in self._specs:
                raise ConfigError(
                    f"expected one of the policies: {', '.join(self._specs)}, "
                    f"got {parent!r}{hint(parent, self._specs)}",
                    key=f"policies.{current}.parent",
                )
            current = parent
        for link in reversed(chain):
            spec = self._specs[link]
            if spec.parent is None:
                resolved[link] = Policy(name=link, **spec.own)
            else:
                resolved[link] = dataclasses.replace(
                    resolved[spec.parent], name=link, parent=spec.parent, **spec.own
                )
        return resolved[name]

    def with_overrides(self, policies: Mapping[str, Mapping[str, object]]) -> PolicySet:
        """A new set where ``policies`` (name -> fields, plus ``parent``) change or add policies.

        A new policy inherits ``default`` unless it names a ``parent``; an existing one keeps
        its parent and the fields it set, overridden by the new ones.
        """
        specs: dict[str, tuple[str | None, Mapping[str, object]]] = {
            name: (spec.parent, spec.own) for name, spec in self._specs.items()
        }
        for name, given in policies.items():
            fields = dict(given)
            old_parent, old_own = specs.get(name, ("default", {}))
            parent = fields.pop("parent", old_parent)
            if parent is not None and not isinstance(parent, str):
                raise ConfigError(
                    f"expected a policy name, got {parent!r}", key=f"policies.{name}.parent"
                )
            if name == "default" and parent is not None:
                raise ConfigError(
                    "the default policy is the root of all others: it has no parent",
                    key="policies.default.parent",
                )
            specs[name] = (parent, {**old_own, **coerce_fields(fields, f"policies.{name}.")})
        return PolicySet(specs)

    def __getitem__(self, name: str) -> Policy:
        try:
            return self._resolved[name]
        except KeyError:
            raise KeyError(
                f"no policy named {name!r}{hint(name, self._resolved)}; "
                f"known: {', '.join(self._resolved)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._resolved)

    def __len__(self) -> int:
        return len(self._resolved)

    def table(self) -> str:
        """A Markdown table of every policy (as in this module's documentation)."""
        head = "| policy | parent | concurrency | rate | tokens | timeout | alert |\n"
        head += "| --- | --- | --- | --- | --- | --- | --- |\n"
        return head + "\n".join(policy.row() for policy in self.values())

    def __repr__(self) -> str:
        return f"PolicySet({', '.join(self._resolved)})"


DEFAULT = PolicySet(
    {
        "default": (None, {}),  # the field defaults of `Policy`: semaphore 10, 30 s, alert 0.8
        "api": ("default", {"concurrency": 20}),
        "llm": ("api", {"timeout": 60.0}),
        "openai": ("llm", {"rate": Rate(60, 60.0)}),
        "anthropic": ("llm", {"rate": Rate(50, 60.0)}),
        "database": ("default", {"timeout": 10.0}),
        "stress": ("default", {"concurrency": 5}),
    }
)
"""The built-in policies (see the module documentation for the table)."""


# ---------------------------------------------------------------------------------------------
# The defaults of the [retries.NAME] and [breakers.NAME] tables
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetPolicy:
    """The settings of a `admission.RetryBudget` (seconds for ``window``)."""

    ratio: float = 0.2
    min_per_second: float = 10.0
    window: float = 10.0

    def __str__(self) -> str:
        return f"{self.ratio:g} + {self.min_per_second:g}/s over {self.window:g}s"


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """The settings of a `admission.Retry` made by a ``[retries.NAME]`` table (seconds for
    the durations; ``breaker``: the name of a ``[breakers.NAME]`` table)."""

    policy: str = "default"
    """The policy these settings came from (the table's ``policy``)."""
    attempts: int | None = 3
    deadline: float | None = 30.0
    base: float = 0.1
    cap: float = 10.0
    jitter: str = "full"
    budget: BudgetPolicy | None = BudgetPolicy()
    """Each table gets its own `admission.RetryBudget`; None: no budget."""
    breaker: str | None = None

    def row(self) -> str:
        """This policy as a row of `retry_table`."""

        def show(value: float | None) -> str:
            if value is None:
                return "none"
            return f"{value:g}s" if value >= 1 else f"{value * 1000:g}ms"

        return (
            f"| {self.policy} | {self.attempts or 'none'} | {show(self.deadline)} "
            f"| {show(self.base)} | {show(self.cap)} | {self.jitter} | {self.budget or 'none'} |"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerPolicy:
    """The settings of a `admission.CircuitBreaker` made by a ``[breakers.NAME]`` table:
    ``window`` an int is a number of calls, a float a span of seconds; durations in seconds."""

    policy: str = "default"
    """The policy these settings came from (the table's ``policy``)."""
    failure_rate: float = 0.5
    window: int | float = 100
    min_calls: int = 20
    slow_call_duration: float | None = None
    slow_call_rate: float = 1.0
    open_for: float = 30.0
    open_for_max: float = 300.0
    half_open_calls: int = 5


RETRY_DEFAULTS: Mapping[str, RetryPolicy] = MappingProxyType(
    {
        "default": RetryPolicy(),
        # LLM APIs: 429s and 5xx that last seconds, answers that take tens of seconds.
        "llm": RetryPolicy(policy="llm", attempts=5, deadline=120.0, base=1.0, cap=30.0),
        # A database: transient errors clear fast, and the pool's timeout is 10 s.
        "database": RetryPolicy(policy="database", deadline=10.0, base=0.05, cap=2.0),
    }
)
"""The built-in retry policies, by policy name (a policy without one takes its parent's)."""

BREAKER_DEFAULTS: Mapping[str, BreakerPolicy] = MappingProxyType({"default": BreakerPolicy()})
"""The built-in breaker policies, by policy name (a policy without one takes its parent's)."""


def nearest(name: str, policies: PolicySet, defaults: Mapping[str, Any]) -> str:
    """The nearest policy on ``name``'s parent chain (itself first) with an entry in
    ``defaults`` (``default`` always has one)."""
    current: str | None = name
    while current is not None and current not in defaults:
        current = policies[current].parent
    return "default" if current is None else current


def retry_table() -> str:
    """A Markdown table of the built-in retry policies (as in this module's documentation)."""
    head = "| policy | attempts | deadline | base | cap | jitter | budget |\n"
    head += "| --- | --- | --- | --- | --- | --- | --- |\n"
    return head + "\n".join(p.row() for p in RETRY_DEFAULTS.values())
