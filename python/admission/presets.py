"""What one HTTP host allows, for `admission.httpx`'s transports: its limits, how to estimate
a request's tokens, and how to read the provider's rate-limit headers.

>>> import admission as adm
>>> openai = adm.presets.openai(rpm=500, tpm=200_000, concurrency=50)
>>> openai.rpm, openai.tpm, openai.concurrency, openai.headers
(500.0, 200000.0, 50, 'openai')
>>> openai.estimate_tokens(b'{"max_tokens": 100, "messages": [{"content": "12345678"}]}')
102

- `host`: a generic host (concurrency, a request rate); reads no vendor headers.
- `openai`: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` (resets as ``6m0s``,
  ``20ms``), estimating ``max_tokens`` (or ``max_completion_tokens``) plus the prompt.
- `anthropic`: ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
  {limit,remaining,reset}`` (resets as RFC 3339 times).

A request's token estimate is its ``max_tokens`` (or the preset's ``default_max_tokens``
when it sets none, as the provider would allow) plus ``len(text) / 4`` over every string of
its messages, system prompt and input (``estimate=`` takes a function of the request's JSON
for a real tokenizer). The real count is read afterwards from the response's ``usage``.

This module reads headers and bodies; it never sends anything and holds no state.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["HostLimits", "Quota", "anthropic", "host", "openai", "parse_reset", "usage_tokens"]

Vendor = Literal["openai", "anthropic"]

# A Go duration as OpenAI writes its resets: "6m0s", "1.5s", "20ms", "1h2m3s".
_GO_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?")
# Request-body keys holding the most tokens the answer may take, in order of preference.
_MAX_TOKENS_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
# Keys whose strings are prompt text (a chat's messages, a system prompt, an input).
_PROMPT_KEYS = ("messages", "system", "prompt", "input", "content", "text")


@dataclass(frozen=True, slots=True)
class Quota:
    """One limit as a provider's headers state it: ``kind`` is ``"requests"`` or
    ``"tokens"``; ``reset_after`` seconds until it is full again (None: not said)."""

    kind: Literal["requests", "tokens"]
    remaining: int
    limit: int | None = None
    reset_after: float | None = None


@dataclass(frozen=True, slots=True)
class HostLimits:
    """The limits of one host (make them with `host`, `openai` or `anthropic`).

    ``rpm`` requests and ``tpm`` tokens per ``period`` seconds (a minute, as the providers
    state their quotas; each a bucket of that capacity, as theirs are). ``None``: no such
    limit.
    """

    concurrency: int | None = None
    rpm: float | None = None
    tpm: float | None = None
    headers: Vendor | None = None
    default_max_tokens: int = 4096
    estimate: Callable[[Any], int] | None = None
    period: float = 60.0

    def __post_init__(self) -> None:
        if self.concurrency is not None and (
            isinstance(self.concurrency, bool)
            or not isinstance(self.concurrency, int)
            or self.concurrency < 1
        ):
            raise ValueError(f"concurrency must be an int >= 1 or None, got {self.concurrency!r}")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number per minute, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0 per minute, got {value!r}")
            object.__setattr__(self, name, float(value))
        if isinstance(self.period, bool) or not isinstance(self.period, (int, float)):
            raise TypeError(f"period must be a number of seconds, got {self.period!r}")
        if not (math.isfinite(self.period) and self.period > 0):
            raise ValueError(f"period must be a finite number of seconds > 0, got {self.period!r}")
        if self.estimate is not None and not callable(self.estimate):
            raise TypeError(
                f"estimate must be a function of the request's JSON, got {self.estimate!r}"
            )

    def estimate_tokens(self, body: bytes) -> int:
        """The tokens a request with this JSON ``body`` may use (0 if it is not JSON)."""
        try:
            request = json.loads(body) if body else None
        except ValueError:
            return 0
        if self.estimate is not None:
            return int(self.estimate(request))
        if not isinstance(request, dict):
            return 0
        most = next(
            (request[k] for k in _MAX_TOKENS_KEYS if isinstance(request.get(k), int)),
            self.default_max_tokens,
        )
        chars = sum(len(s) for k in _PROMPT_KEYS if k in request for s in _strings(request[k]))
        return int(most) + math.ceil(chars / 4)

    def quotas(self, headers: Mapping[str, str], wall: float | None = None) -> list[Quota]:
        """The quotas the response's ``headers`` state (none for `host`)."""
        if self.headers == "openai":
            return _openai_quotas(headers)
        if self.headers == "anthropic":
            return _anthropic_quotas(headers, time.time() if wall is None else wall)
        return []


def host(
    *, concurrency: int | None = 20, rpm: float | None = None, period: float = 60.0
) -> HostLimits:
    """A generic host: at most ``concurrency`` requests at once, ``rpm`` per minute."""
    return HostLimits(concurrency=concurrency, rpm=rpm, period=period)


def openai(
    *,
    rpm: float | None = None,
    tpm: float | None = None,
    concurrency: int | None = None,
    default_max_tokens: int = 4096,
    estimate: Callable[[Any], int] | None = None,
    period: float = 60.0,
) -> HostLimits:
    """OpenAI's limits: requests and tokens per minute (your tier's), and a concurrency cap
    of your own; synced from ``x-ratelimit-*`` after every response. ``estimate``: the
    tokens of a request from its JSON (default: ``max_tokens`` or ``default_max_tokens``,
    plus the prompt's characters / 4)."""
    return HostLimits(concurrency, rpm, tpm, "openai", default_max_tokens, estimate, period)


def anthropic(
    *,
    rpm: float | None = None,
    tpm: float | None = None,
    concurrency: int | None = None,
    default_max_tokens: int = 4096,
    estimate: Callable[[Any], int] | None = None,
    period: float = 60.0,
) -> HostLimits:
    """Anthropic's limits: requests and tokens (input + output) per minute; synced from
    ``anthropic-ratelimit-*`` after every response (the tokens limit from
    ``anthropic-ratelimit-tokens-*``, else the tighter of the input and output ones)."""
    return HostLimits(concurrency, rpm, tpm, "anthropic", default_max_tokens, estimate, period)


def _strings(value: object) -> Iterator[str]:
    """Every string inside ``value`` (nested lists and dicts)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def parse_reset(value: str, wall: float | None = None) -> float | None:
    """Seconds until a reset stated as OpenAI does (``"6m0s"``, ``"20ms"``, ``"1.5s"``), as
    a number of seconds, or as an RFC 3339 time (Anthropic); None if unreadable.

    >>> parse_reset("6m0s"), parse_reset("20ms"), parse_reset("1h2m3.5s"), parse_reset("7")
    (360.0, 0.02, 3723.5, 7.0)
    >>> parse_reset("2030-01-01T00:00:10Z", wall=1893456000.0)
    10.0
    >>> parse_reset("soon") is None
    True
    """
    value = value.strip()
    # OpenAI's form first (every response carries two): one match, no exception raised.
    go = _GO_DURATION.fullmatch(value)
    if go is not None and any(go.groups()):
        h, m, s, ms = go.groups()
        return float(h or 0) * 3600.0 + float(m or 0) * 60.0 + float(s or 0) + float(ms or 0) / 1e3
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    now = time.time() if wall is None else wall
    return max(0.0, when.timestamp() - now)


def _int(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def _quota(
    kind: Literal["requests", "tokens"],
    remaining: int | None,
    limit: int | None,
    reset: str | None,
    wall: float | None,
) -> list[Quota]:
    if remaining is None:
        return []
    return [Quota(kind, remaining, limit, None if reset is None else parse_reset(reset, wall))]


def _openai_quotas(headers: Mapping[str, str]) -> list[Quota]:
    quotas: list[Quota] = []
    for kind in ("requests", "tokens"):
        quotas += _quota(
            kind,
            _int(headers, f"x-ratelimit-remaining-{kind}"),
            _int(headers, f"x-ratelimit-limit-{kind}"),
            headers.get(f"x-ratelimit-reset-{kind}"),
            None,
        )
    return quotas


def _anthropic_quotas(headers: Mapping[str, str], wall: float) -> list[Quota]:
    def read(name: str, kind: Literal["requests", "tokens"]) -> list[Quota]:
        prefix = f"anthropic-ratelimit-{name}"
        return _quota(
            kind,
            _int(headers, f"{prefix}-remaining"),
            _int(headers, f"{prefix}-limit"),
            headers.get(f"{prefix}-reset"),
            wall,
        )

    quotas = read("requests", "requests")
    tokens = read("tokens", "tokens")
    if not tokens:
        # Separate input and output limits: the tighter one bounds what a call may use.
        split = read("input-tokens", "tokens") + read("output-tokens", "tokens")
        tokens = sorted(split, key=lambda q: q.remaining)[:1]
    return quotas + tokens


def usage_tokens(body: bytes) -> int | None:
    """The tokens a response's body says were used: ``usage.total_tokens`` (OpenAI), or
    ``input_tokens + output_tokens`` (Anthropic); in a JSON body or in a stream of
    server-sent events (the last figures win; Anthropic's input count comes first). None
    when the body states no usage.

    >>> usage_tokens(b'{"usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}}')
    12
    >>> usage_tokens(b'data: {"usage": {"input_tokens": 20, "output_tokens": 1}}\\n\\n'
    ...              b'data: {"usage": {"output_tokens": 15}}\\n\\ndata: [DONE]\\n\\n')
    35
    >>> usage_tokens(b'{"error": {}}') is None
    True
    """
    stripped = body.lstrip()
    if stripped.startswith(b"{"):
        documents: list[bytes] = [stripped]
    else:
        documents = [line[5:].strip() for line in body.splitlines() if line.startswith(b"data:")]
    total: int | None = None
    counts: dict[str, int] = {}
    for document in documents:
        try:
            event = json.loads(document)
        except ValueError:
            continue
        usage = _usage_of(event)
        if usage is None:
            continue
        if isinstance(usage.get("total_tokens"), int):
            total = usage["total_tokens"]
        for key in ("input_tokens", "output_tokens"):
            if isinstance(usage.get(key), int):
                counts[key] = usage[key]
    if total is not None:
        return total
    if counts:
        return sum(counts.values())
    return None


def _usage_of(event: object) -> dict[str, Any] | None:
    if not isinstance(event, dict):
        return None
    usage = event.get("usage")
    if isinstance(usage, dict):
        return usage
    message = event.get("message")  # Anthropic's message_start carries it in the message
    if isinstance(message, dict):
        inner = message.get("usage")
        if isinstance(inner, dict):
            return inner
    return None
