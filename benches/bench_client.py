"""The httpx transports' own cost per request (issue 15): target <= 20 us over the bare
transport they wrap, in the same run.

Each request goes through ``handle_async_request`` (``handle_request`` in threads) of:

- the bare inner transport (the floor): an in-memory transport answering at once with an
  unread JSON body (as a network transport returns it), no client around it;
- `admission.httpx.AsyncTransport` around it with the default preset (a concurrency permit,
  the per-host breaker, the retry's first attempt, the body wrapped to release the permit
  when it closes);
- the same with ``presets.openai(rpm=..., tpm=..., concurrency=...)``: a request and its
  estimated tokens reserved, the rate-limit headers synced, the tokens settled from the
  body's ``usage``;
- the same with ``presets.anthropic(...)``, answered with Anthropic's twelve rate-limit
  headers (RFC 3339 resets) and its ``usage`` (input and output tokens); its floor is the
  bare inner transport giving that answer (httpx's own work on twelve more headers is not
  the transport's).

then reads and closes the response. Limits are high enough never to wait. Run::

    .venv/bin/python -m pytest benches/bench_client.py -q --benchmark-only \\
        --benchmark-json=/tmp/client.json
    .venv/bin/python benches/report.py /tmp/client.json --no-targets
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any, NamedTuple

import httpx
import pytest

import admission as adm

CALLS = 500
ROUNDS = 60
BODY = (
    b'{"id":"x","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}'
)
HEADERS = {
    "content-type": "application/json",
    "x-ratelimit-limit-requests": "100000000",
    "x-ratelimit-remaining-requests": "99999999",
    "x-ratelimit-reset-requests": "1ms",
    "x-ratelimit-limit-tokens": "1000000000",
    "x-ratelimit-remaining-tokens": "999999999",
    "x-ratelimit-reset-tokens": "1ms",
}
# Anthropic's answer: its usage, and its twelve rate-limit headers (resets as RFC 3339 times,
# here in the past: the quota is full, nothing is held back).
ANTHROPIC_BODY = (
    b'{"id":"msg_x","type":"message","content":[],"usage":{"input_tokens":9,"output_tokens":3}}'
)
ANTHROPIC_HEADERS = {"content-type": "application/json"}
for _quota, _limit in [
    ("requests", "100000000"),
    ("tokens", "1000000000"),
    ("input-tokens", "1000000000"),
    ("output-tokens", "1000000000"),
]:
    ANTHROPIC_HEADERS |= {
        f"anthropic-ratelimit-{_quota}-limit": _limit,
        f"anthropic-ratelimit-{_quota}-remaining": str(int(_limit) - 1),
        f"anthropic-ratelimit-{_quota}-reset": "2026-01-01T00:00:00Z",
    }
REQUEST_JSON = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "hello"}]}


class _Body(httpx.AsyncByteStream, httpx.SyncByteStream):
    """An unread body, as a network transport returns it."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def __iter__(self) -> Iterator[bytes]:
        yield self._body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._body


class Inner(httpx.AsyncBaseTransport, httpx.BaseTransport):
    """Answers every request at once (OpenAI's headers and body by default)."""

    def __init__(self, headers: dict[str, str] = HEADERS, body: bytes = BODY) -> None:
        self._headers = headers
        self._body = body

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=self._headers, stream=_Body(self._body), request=request)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=self._headers, stream=_Body(self._body), request=request)


def _host() -> dict[str, Any]:
    return {}


def _openai() -> dict[str, Any]:
    preset = adm.presets.openai(rpm=1e8, tpm=1e9, concurrency=1000)
    return {"limits": {"api.example.com": preset}}


def _anthropic() -> dict[str, Any]:
    preset = adm.presets.anthropic(rpm=1e8, tpm=1e9, concurrency=1000)
    return {"limits": {"api.example.com": preset}}


class Row(NamedTuple):
    key: str
    impl: str
    role: str
    baseline: bool
    config: Any  # None: the bare inner transport


ROWS = [
    Row(
        "transport host preset",
        "admission transport, default preset",
        "admission",
        True,
        _host,
    ),
    Row(
        "transport openai preset",
        "admission transport, presets.openai",
        "admission",
        False,
        _openai,
    ),
    Row(
        "transport anthropic preset",
        "admission transport, presets.anthropic",
        "admission",
        False,
        _anthropic,
    ),
    Row("bare inner transport", "the inner transport alone (floor)", "floor", False, None),
    Row(
        "bare inner transport, anthropic answer",
        "the inner transport alone, Anthropic's answer (the anthropic row's floor)",
        "reference",
        False,
        None,
    ),
]


def inner_for(row: Row) -> Inner:
    """The inner transport of a row: Anthropic's answers for its preset, else OpenAI's."""
    if row.config is _anthropic or row.key.endswith("anthropic answer"):
        return Inner(ANTHROPIC_HEADERS, ANTHROPIC_BODY)
    return Inner()


@pytest.fixture(scope="module")
def loop() -> Any:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def chat_request() -> httpx.Request:
    """The request every row sends: a chat completion's JSON."""
    return httpx.Request("POST", "https://api.example.com/v1/chat/completions", json=REQUEST_JSON)


@pytest.mark.benchmark(group="client transport per request (async)")
@pytest.mark.parametrize("row", ROWS, ids=[r.key for r in ROWS])
def test_async_transport(benchmark: Any, loop: Any, row: Row) -> None:
    inner = inner_for(row)
    transport: Any = (
        inner if row.config is None else adm.httpx.AsyncTransport(inner, **row.config())
    )
    request = chat_request()

    async def one_round() -> None:
        for _ in range(CALLS):
            response = await transport.handle_async_request(request)
            await response.aread()
            await response.aclose()

    benchmark.extra_info.update(
        key=row.key, impl=row.impl, role=row.role, baseline=row.baseline, calls=CALLS
    )
    benchmark.pedantic(
        lambda: loop.run_until_complete(one_round()), rounds=ROUNDS, iterations=1, warmup_rounds=2
    )


@pytest.mark.benchmark(group="client transport per request (sync)")
@pytest.mark.parametrize("row", ROWS, ids=[r.key for r in ROWS])
def test_sync_transport(benchmark: Any, row: Row) -> None:
    inner = inner_for(row)
    transport: Any = inner if row.config is None else adm.httpx.Transport(inner, **row.config())
    request = chat_request()

    def one_round() -> None:
        for _ in range(CALLS):
            response = transport.handle_request(request)
            response.read()
            response.close()

    benchmark.extra_info.update(
        key=row.key, impl=row.impl, role=row.role, baseline=row.baseline, calls=CALLS
    )
    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1, warmup_rounds=2)
