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
from admission.durations import Rate, parse_duration, parse_rate
from admission.errors import ConfigError

__all__ = ["DEFAULT", "FIELDS", "Policy", "PolicySet"]

FIELDS = (
    "concurrency",
    "rate",
    "burst",
    "tokens",
    "token_burst",
    "timeout",
    "alert_threshold",
)
"""The fields a policy, a ``[defaults]`` table or a named limit can set."""


def hint(word: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a known name is close to ``word``, else ``""``."""
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def is_none(value: object) -> bool:
    """Whether a configuration value switches a setting off: ``"none"`` (TOML has no null)
    or a YAML/JSON null."""
    return value is None or (isinstance(value, str) and value.strip().lower() == "none")


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
