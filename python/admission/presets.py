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

This module reads headers and bodies; it never sends anything and holds no state. The
reading is native (``_native.read_quotas``, ``estimate_tokens``, ``usage_tokens``: one pass
over the bytes); what the native reading is not sure of (other encodings, other forms of a
count or a reset) it hands to the Python readers here, which are the reference.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

from admission import _native

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


QuotaValues = tuple[bool, int, int | None, float | None]
"""A `Quota` as a tuple, for the transports: (tokens?, remaining, limit, reset_after)."""


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
        if type(self.default_max_tokens) is not int or not 0 <= self.default_max_tokens < 1 << 63:
            raise ValueError(
                f"default_max_tokens must be an int >= 0, got {self.default_max_tokens!r}"
            )
        if self.estimate is not None and not callable(self.estimate):
            raise TypeError(
                f"estimate must be a function of the request's JSON, got {self.estimate!r}"
            )

    def estimate_tokens(self, body: bytes) -> int:
        """The tokens a request with this JSON ``body`` may use (0 if it is not JSON).

        Raises:
            TypeError / ValueError: ``estimate`` returned something that is not a number of
                tokens (an int from 0 to 2**64 - 1; not a bool, not a float).
        """
        if self.estimate is not None:
            try:
                request = _loads(body) if body else None
            except ValueError:
                return 0
            return _estimated(self.estimate(request))
        if not body:
            return 0
        tokens = _native.estimate_tokens(body, self.default_max_tokens)
        return _estimate_slow(body, self.default_max_tokens) if tokens is None else tokens

    def quotas(self, headers: Mapping[str, str], wall: float | None = None) -> list[Quota]:
        """The quotas the response's ``headers`` state (none for `host`). Header names are
        case-insensitive; ``wall`` is the wall clock an RFC 3339 reset is counted from."""
        return [
            Quota("tokens" if tokens else "requests", remaining, limit, reset)
            for tokens, remaining, limit, reset in self.read_headers(headers.items(), wall)
        ]

    def read_headers(
        self, raw: Iterable[tuple[bytes | str, bytes | str]], wall: float | None = None
    ) -> list[QuotaValues]:
        """`quotas` from httpx's ``headers.raw`` (name and value bytes), as plain tuples
        ``(tokens?, remaining, limit, reset_after)``: the transports' path, one native pass
        over the headers after every response."""
        if self.headers is None:
            return []
        return _native.read_quotas(raw, self.headers, wall)


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


def _estimated(tokens: object) -> int:
    """A user ``estimate``'s answer, checked: a number of tokens."""
    if type(tokens) is not int:
        if isinstance(tokens, bool) or not isinstance(tokens, int):
            raise TypeError(
                "estimate must return a number of tokens (an int), "
                f"got {type(tokens).__name__} {tokens!r}"
            )
        tokens = int(tokens)
    if not 0 <= tokens <= _MAX_ESTIMATE:
        raise ValueError(
            f"estimate must return a number of tokens from 0 to 2**64 - 1, got {tokens}"
        )
    return tokens


_MAX_ESTIMATE = (1 << 64) - 1


def _estimate_slow(body: bytes, default_max_tokens: int) -> int:
    """`HostLimits.estimate_tokens` by `json.loads`: what the native reading is not sure
    of (the JSON it does not read: other encodings, huge integers, malformed bodies)."""
    try:
        request = _loads(body)
    except ValueError:
        return 0
    if not isinstance(request, dict):
        return 0
    most = default_max_tokens
    for key in _MAX_TOKENS_KEYS:
        value = request.get(key)
        if _is_count(value):
            most = value
            break
    chars = 0
    for key in _PROMPT_KEYS:
        if key in request:
            chars += _text_length(request[key])
    return most + -(-chars // 4)  # (chars / 4, rounded up)


def _text_length(value: object) -> int:
    """The characters of every string inside ``value`` (nested lists and dicts' values)."""
    if isinstance(value, str):
        return len(value)
    total = 0
    pending = [value]  # (a stack, not recursion: no frame per message)
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, list):
            pending += item
        elif isinstance(item, dict):
            pending += item.values()
    return total


# The scanner of json.loads' own decoder (what its raw_decode calls), and JSON's whitespace.
_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_JSON_SPACE = " \t\n\r"


def _loads(data: bytes) -> Any:
    """``json.loads(data)``, faster on the usual case (UTF-8, no BOM): it skips the encoding
    detection and the whitespace regex. Anything unusual goes to ``json.loads`` itself, so
    the result (or the ValueError) is always its."""
    try:
        text = data.decode().strip(_JSON_SPACE)
        value, end = _SCAN(text, 0)
    except (ValueError, StopIteration):  # (UnicodeDecodeError too) a BOM, UTF-16, not JSON
        return json.loads(data)
    if end != len(text):
        return json.loads(data)  # extra data: json.loads says what
    return value


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
    return _until(_read_reset(value), wall)


# Every response states its resets: the same texts again and again (Anthropic's times for a
# whole minute, OpenAI's "1s" or "6m0s"), read once each. Value -> (seconds, None) for a
# duration, (None, the time) for an RFC 3339 time, (None, None) for unreadable.
_RESETS: dict[bytes, tuple[float | None, float | None]] = {}
_MAX_RESETS, _MAX_RESET_LEN = 1024, 64


def _read_reset(value: str) -> tuple[float | None, float | None]:
    """`parse_reset` without the memo: a duration, or a point in (wall clock) time."""
    value = value.strip()
    # OpenAI's form first (every response carries two): one match, no exception raised.
    go = _GO_DURATION.fullmatch(value)
    if go is not None and any(go.groups()):
        h, m, s, ms = go.groups()
        seconds = (
            float(h or 0) * 3600.0 + float(m or 0) * 60.0 + float(s or 0) + float(ms or 0) / 1e3
        )
        return _finite(seconds), None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return _finite(seconds), None
    try:
        when = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None, None
    if when.tzinfo is None:
        return None, None
    return None, when.timestamp()


def _finite(seconds: float) -> float | None:
    """``seconds`` if it can be a wait (a finite number >= 0), else None: unreadable."""
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _reset(value: str | bytes, wall: float | None) -> float | None:
    """`parse_reset` of a header's value; as bytes (the transports'), remembered."""
    if not isinstance(value, bytes):
        return parse_reset(value, wall)
    read = _RESETS.get(value)
    if read is None:
        read = _read_reset(value.decode("latin-1"))
        if len(value) <= _MAX_RESET_LEN:
            if len(_RESETS) >= _MAX_RESETS:
                _RESETS.clear()  # (a bound, not an LRU: values seen again are read again)
            _RESETS[value] = read
    return _until(read, wall)


def _until(read: tuple[float | None, float | None], wall: float | None) -> float | None:
    """The seconds of a read reset: its duration, or the time left until its time."""
    seconds, at = read
    if at is None:
        return seconds
    now = time.time() if wall is None else wall
    return max(0.0, at - now)


def _count(value: str | bytes) -> int | None:
    """A header's count, or None if it is not an int >= 0."""
    if value.isdigit() and value.isascii():
        return int(value)  # (the usual: plain digits)
    try:
        number = int(value)
    except ValueError:
        if not isinstance(value, bytes):
            return None
        try:  # (whitespace beyond ASCII's, which only the str form strips)
            number = int(value.decode("latin-1"))
        except ValueError:
            return None
    return number if number >= 0 else None


def usage_tokens(body: bytes) -> int | None:
    """The tokens a response's body says were used: ``usage.total_tokens`` (OpenAI), or
    ``input_tokens + output_tokens`` (Anthropic); in a JSON body or in a stream of
    server-sent events (the last figures win; Anthropic's input count comes first). Only
    counts are read (ints >= 0: not a bool, not a float). None when the body states no usage.

    >>> usage_tokens(b'{"usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}}')
    12
    >>> usage_tokens(b'data: {"usage": {"input_tokens": 20, "output_tokens": 1}}\\n\\n'
    ...              b'data: {"usage": {"output_tokens": 15}}\\n\\ndata: [DONE]\\n\\n')
    35
    >>> usage_tokens(b'{"error": {}}') is None
    True
    """
    sure, tokens = _native.usage_tokens(body)
    return tokens if sure else _usage_slow(body)


def _is_count(value: object) -> TypeGuard[int]:
    """A number of tokens in JSON: an int >= 0 (json gives bools as such: not counts)."""
    return type(value) is int and value >= 0


def _usage_slow(body: bytes) -> int | None:
    """`usage_tokens` by `json.loads`: what the native reading is not sure of (the JSON
    it does not read: other encodings, huge integers, malformed events)."""
    stripped = body.lstrip()
    if stripped[:1] == b"{":
        documents: list[bytes] = [stripped]
    else:
        documents = [line[5:].strip() for line in body.splitlines() if line.startswith(b"data:")]
    total: int | None = None
    counts: dict[str, int] = {}
    for document in documents:
        try:
            event = _loads(document)
        except ValueError:
            continue
        usage = _usage_of(event)
        if usage is None:
            continue
        if _is_count(usage.get("total_tokens")):
            total = usage["total_tokens"]
        for key in ("input_tokens", "output_tokens"):
            if _is_count(usage.get(key)):
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
