"""`admission.httpx` transports and `admission.presets`, in memory (issue 15).

An httpx ``MockTransport`` stands for the network: each test scripts the provider's answers.
The loopback tests against a real rate-limited server are in
``tests/integration/test_client_loopback.py``. Async tests run on asyncio, uvloop and trio.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import admission as adm
from admission import presets

FAST = {"attempts": 4, "deadline": "30s", "base": "1ms", "cap": "2ms"}


def script(*answers: Any) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A mock network answering with ``answers`` in turn (a response, an exception to raise,
    or a function of the request), the last one repeated; and the requests it received."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        answer = answers[min(len(seen), len(answers) - 1)]
        seen.append(request)
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            answer = answer(request)
        assert isinstance(answer, httpx.Response)
        return answer

    return httpx.MockTransport(handler), seen


def ok(tokens: int = 10, **headers: str) -> httpx.Response:
    return httpx.Response(200, json={"usage": {"total_tokens": tokens}}, headers=headers)


def chat(max_tokens: int = 100, text: str = "x" * 40) -> dict[str, Any]:
    return {"max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]}


# -- presets ---------------------------------------------------------------------------------


def test_the_estimate_is_max_tokens_plus_a_quarter_of_the_prompt() -> None:
    openai = presets.openai(rpm=10, tpm=1000, default_max_tokens=500)
    body = json.dumps(chat(100, "y" * 40)).encode()
    assert openai.estimate_tokens(body) == 100 + (4 + 40) // 4  # the role's "user" counts too
    no_max = json.dumps({"messages": [{"content": "abcd"}]}).encode()
    assert openai.estimate_tokens(no_max) == 500 + 1
    assert openai.estimate_tokens(b"not json") == 0
    own = presets.openai(tpm=1000, estimate=lambda request: len(request["messages"]) * 7)
    assert own.estimate_tokens(body) == 7


def test_presets_refuse_bad_limits() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        presets.host(concurrency=0)
    with pytest.raises(ValueError, match="rpm"):
        presets.openai(rpm=-1)
    with pytest.raises(TypeError, match="tpm"):
        presets.openai(tpm="lots")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="period"):
        presets.openai(rpm=1, period=0)


def test_openai_headers_are_read() -> None:
    headers = {
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "499",
        "x-ratelimit-reset-requests": "120ms",
        "x-ratelimit-limit-tokens": "200000",
        "x-ratelimit-remaining-tokens": "150000",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    assert presets.openai(rpm=500).quotas(headers) == [
        presets.Quota("requests", 499, 500, 0.12),
        presets.Quota("tokens", 150000, 200000, 360.0),
    ]
    assert presets.host().quotas(headers) == []


def test_anthropic_headers_are_read() -> None:
    wall = datetime.datetime(2030, 3, 17, 17, 46, 40, tzinfo=datetime.timezone.utc).timestamp()
    headers = {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "10",
        "anthropic-ratelimit-requests-reset": "2030-03-17T17:46:50Z",
        "anthropic-ratelimit-input-tokens-remaining": "3000",
        "anthropic-ratelimit-output-tokens-remaining": "800",
    }
    reset = 10.0
    quotas = presets.anthropic(rpm=50).quotas({**headers}, wall=wall)
    assert quotas[0].kind == "requests"
    assert quotas[0].remaining == 10
    assert quotas[0].limit == 50
    assert quotas[0].reset_after == pytest.approx(reset)
    # No combined tokens headers: the tighter of input and output bounds a call.
    assert quotas[1] == presets.Quota("tokens", 800, None, None)


@pytest.mark.parametrize(
    ("body", "tokens"),
    [
        (b'{"usage": {"total_tokens": 42}}', 42),
        (b'{"usage": {"input_tokens": 30, "output_tokens": 12}}', 42),
        (
            b'data: {"type": "message_start", "message": {"usage": {"input_tokens": 30, '
            b'"output_tokens": 1}}}\n\ndata: {"type": "message_delta", "usage": '
            b'{"output_tokens": 12}}\n\n',
            42,
        ),
        (b'data: {"choices": []}\n\ndata: {"usage": {"total_tokens": 42}}\n\ndata: [DONE]\n\n', 42),
        (b'{"choices": []}', None),
        (b"garbage", None),
    ],
)
def test_usage_is_read_from_json_and_event_streams(body: bytes, tokens: int | None) -> None:
    assert presets.usage_tokens(body) == tokens


_NAMES = [
    f"x-ratelimit-{field}-{kind}"
    for kind in ("requests", "tokens")
    for field in ("remaining", "limit", "reset")
] + [
    f"anthropic-ratelimit-{kind}-{field}"
    for kind in ("requests", "tokens", "input-tokens", "output-tokens")
    for field in ("remaining", "limit", "reset")
]
_VALUES = st.sampled_from(
    [
        "0",
        "12",
        " 7 ",
        "-3",
        "1_000",
        "x",
        "",
        "99999999999999999999999",
        "1ms",
        "6m0s",
        "1.5s",
        "1e400",
        "9" * 400 + "s",
        "2030-01-01T00:00:10Z",
        "2030-01-01T00:00:10",
        "7",
    ]
)


def _reference_quotas(vendor: str, headers: dict[str, str], wall: float) -> list[presets.Quota]:
    """The quotas as the headers state them, read the plain way: each name looked up in a
    lowercased dict (the last of a repeated header), each value parsed alone."""
    lowered = {k.lower(): v for k, v in headers.items()}

    def count(name: str) -> int | None:
        try:
            n = int(lowered[name].strip())
        except (KeyError, ValueError):
            return None
        return n if n >= 0 else None

    def quota(kind: Any, prefix: str, suffix: str) -> list[presets.Quota]:
        remaining = count(f"{prefix}remaining{suffix}")
        if remaining is None:
            return []
        reset = lowered.get(f"{prefix}reset{suffix}")
        return [
            presets.Quota(
                kind,
                remaining,
                count(f"{prefix}limit{suffix}"),
                None if reset is None else presets.parse_reset(reset, wall),
            )
        ]

    if vendor == "openai":
        return quota("requests", "x-ratelimit-", "-requests") + quota(
            "tokens", "x-ratelimit-", "-tokens"
        )
    read = [
        quota("requests" if k == "requests" else "tokens", f"anthropic-ratelimit-{k}-", "")
        for k in ("requests", "tokens", "input-tokens", "output-tokens")
    ]
    tokens = read[1] or sorted(read[2] + read[3], key=lambda q: q.remaining)[:1]
    return read[0] + tokens


@settings(max_examples=300, deadline=None)
@given(
    vendor=st.sampled_from(["openai", "anthropic"]),
    headers=st.lists(
        st.tuples(
            st.sampled_from([*_NAMES, "content-type", "x-request-id", "anthropic-version"]),
            st.sampled_from(["lower", "upper", "title"]),
            _VALUES,
        ),
        max_size=16,
    ),
)
def test_the_transports_header_reader_reads_what_quotas_reads(
    vendor: str, headers: list[tuple[str, str, str]]
) -> None:
    """`read_headers` (raw bytes, one pass: the transports') states the same quotas as the
    plain reading of the same headers, whatever their case, order and repetition."""
    wall = 1893456000.0
    raw = [(getattr(name, case)().encode(), value.encode()) for name, case, value in headers]
    plain: dict[str, str] = {}
    for name, value in raw:
        plain[name.decode().lower()] = value.decode()
    preset = presets.openai(rpm=1) if vendor == "openai" else presets.anthropic(rpm=1)
    want = _reference_quotas(vendor, plain, wall)
    got = [
        presets.Quota("tokens" if tokens else "requests", remaining, limit, reset)
        for tokens, remaining, limit, reset in preset.read_headers(raw, wall)
    ]
    assert got == want
    assert preset.read_headers(raw, wall) == preset.read_headers(raw, wall)  # (remembered)
    assert preset.quotas(plain, wall) == want


def test_unreadable_resets_and_huge_counts_are_no_error() -> None:
    """A reset too large to be a float is unreadable (None), not infinity; a remaining
    count beyond any capacity syncs nothing and raises nothing (it used to overflow)."""
    assert presets.parse_reset("9" * 400 + "s") is None
    assert presets.parse_reset("1e400") is None
    huge = {
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "9" * 30,
        "x-ratelimit-reset-tokens": "9" * 400 + "s",
    }
    inner, _ = script(ok(**huge))
    t = adm.httpx.Transport(inner, limits={"api.x": presets.openai(tpm=1000)})
    with httpx.Client(transport=t) as client:
        assert client.post("https://api.x/", json=chat(10)).status_code == 200
    bucket = t._config.hosts.get(httpx.URL("https://api.x/")).tokens_bucket
    assert bucket is not None
    assert bucket.peek(1000 - 10).allowed  # only the usage (10) was taken


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=40),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=8), inner, max_size=4)
            ),
            max_leaves=12,
        ).map(lambda v: json.dumps(v).encode()),
    ),
    st.sampled_from([b"", b" ", b"\n\t", b"\xef\xbb\xbf", b"\x00"]),
    st.sampled_from([b"", b" \r\n", b"x", b"\x0b"]),
)
def test_the_fast_json_reading_is_json_loads(body: bytes, before: bytes, after: bytes) -> None:
    """`presets._loads` (estimates and usage) gives what ``json.loads`` gives, or raises
    the ValueError it raises."""
    data = before + body + after
    try:
        want: Any = ("ok", json.loads(data))
    except ValueError as error:
        want = ("error", str(error))
    try:
        got: Any = ("ok", presets._loads(data))
    except ValueError as error:
        got = ("error", str(error))
    if want[0] == "ok" and want != got:  # (NaN: equal only as text)
        assert repr(want) == repr(got)
    else:
        assert got == want


# -- the transport ---------------------------------------------------------------------------


def transport(inner: httpx.MockTransport, **kwargs: Any) -> adm.httpx.AsyncTransport:
    kwargs.setdefault("retry", adm.Retry(**FAST))  # type: ignore[arg-type]
    return adm.httpx.AsyncTransport(inner, **kwargs)


@pytest.mark.anyio
async def test_tokens_are_reserved_at_the_estimate_and_settled_at_the_usage() -> None:
    inner, _seen = script(ok(tokens=30))
    t = transport(inner, limits={"api.x": presets.openai(rpm=60, tpm=1000, concurrency=2)})
    async with httpx.AsyncClient(transport=t) as client:
        response = await client.post("https://api.x/v1/chat", json=chat(100))
    assert response.json()["usage"]["total_tokens"] == 30
    host = t.stats()["api.x"]
    assert (host.tokens_reserved, host.tokens_settled) == (111, 30)
    bucket = t._config.hosts.get(httpx.URL("https://api.x/"))
    assert bucket.tokens_bucket is not None
    assert bucket.tokens_bucket.stats().admitted_cost == 30
    assert bucket.semaphore is not None
    assert bucket.semaphore.in_use == 0


@pytest.mark.anyio
async def test_a_429_pauses_the_host_for_everyone_and_is_retried() -> None:
    limited = httpx.Response(429, headers={"retry-after-ms": "5"}, json={"error": {}})
    inner, seen = script(limited, ok())
    t = transport(inner, limits={"api.x": presets.openai(rpm=600, concurrency=4)})
    async with httpx.AsyncClient(transport=t) as client:
        response = await client.post("https://api.x/v1/chat", json=chat())
    assert response.status_code == 200
    assert len(seen) == 2
    host = t.stats()["api.x"]
    assert (host.requests, host.rate_limited, host.retries, host.pauses) == (2, 1, 1, 1)
    state = t._config.hosts.get(httpx.URL("https://api.x/"))
    assert state.not_before > 0  # everyone waits for it, not only the caller that saw it
    assert state.requests_bucket is not None
    assert state.requests_bucket.stats().admitted == 2


@pytest.mark.parametrize("form", ["seconds", "milliseconds", "http-date"])
def test_every_retry_after_form_pauses_the_host(form: str) -> None:
    header = {
        "seconds": {"retry-after": "7"},
        "milliseconds": {"retry-after-ms": "7000"},
        # (made now: a date made at collection would be in the past when the test runs)
        "http-date": {"retry-after": email.utils.formatdate(time.time() + 7, usegmt=True)},
    }[form]
    inner, _ = script(httpx.Response(429, headers=header))
    t = adm.httpx.Transport(
        inner, limits={"api.x": presets.host(rpm=600)}, retry=adm.Retry(attempts=1)
    )
    with httpx.Client(transport=t) as client:
        response = client.get("https://api.x/")
    assert response.status_code == 429  # the retries gave up: the last response
    state = t._config.hosts.get(httpx.URL("https://api.x/"))
    # (an HTTP date has whole seconds: 6 to 7 s; less what this test took so far)
    assert 3.0 < state.not_before - time.monotonic() <= 7.0
    assert state.requests_bucket is not None
    assert state.requests_bucket.peek().retry_after > 3.0


@pytest.mark.anyio
@pytest.mark.parametrize("status", [502, 503, 504])
async def test_gateway_failures_are_retried_on_idempotent_methods_only(status: int) -> None:
    inner, seen = script(httpx.Response(status), ok())
    t = transport(inner)
    async with httpx.AsyncClient(transport=t) as client:
        assert (await client.get("https://api.x/")).status_code == 200
        assert len(seen) == 2
        # A POST the server may have served is not sent twice...
        assert (await client.post("https://api.x/", json={})).status_code == 200
        seen.clear()
    inner, seen = script(httpx.Response(status), ok())
    async with httpx.AsyncClient(transport=transport(inner)) as client:
        assert (await client.post("https://api.x/", json={})).status_code == status
    assert len(seen) == 1
    # ...unless asked (LLM APIs: a completion is safe to ask again).
    inner, seen = script(httpx.Response(status), ok())
    async with httpx.AsyncClient(transport=transport(inner, retry_post=True)) as client:
        assert (await client.post("https://api.x/", json={})).status_code == 200
    assert len(seen) == 2


@pytest.mark.anyio
async def test_a_post_is_retried_after_errors_the_server_never_saw() -> None:
    inner, seen = script(httpx.ConnectError("refused"), ok())
    async with httpx.AsyncClient(transport=transport(inner)) as client:
        assert (await client.post("https://api.x/", json={})).status_code == 200
    assert len(seen) == 2
    inner, seen = script(httpx.ReadError("reset"), ok())
    async with httpx.AsyncClient(transport=transport(inner)) as client:
        with pytest.raises(httpx.ReadError):
            await client.post("https://api.x/", json={})
    assert len(seen) == 1
    inner, seen = script(httpx.ReadError("reset"), ok())
    async with httpx.AsyncClient(transport=transport(inner)) as client:
        assert (await client.get("https://api.x/")).status_code == 200
    assert len(seen) == 2


@pytest.mark.anyio
async def test_headers_sync_the_buckets_down_never_up() -> None:
    low = {
        "x-ratelimit-limit-requests": "100",
        "x-ratelimit-remaining-requests": "3",
        "x-ratelimit-reset-requests": "1s",
    }
    inner, _ = script(ok(**low))
    t = transport(inner, limits={"api.x": presets.openai(rpm=100)})
    async with httpx.AsyncClient(transport=t) as client:
        await client.get("https://api.x/")
    bucket = t._config.hosts.get(httpx.URL("https://api.x/")).requests_bucket
    assert bucket is not None
    assert bucket.peek(3).allowed
    assert not bucket.peek(4).allowed


@pytest.mark.anyio
async def test_the_permit_is_held_until_the_streamed_body_closes() -> None:
    inner, _ = script(
        httpx.Response(200, stream=httpx.ByteStream(b'{"usage": {"total_tokens": 5}}'))
    )
    t = transport(inner, limits={"api.x": presets.openai(tpm=1000, concurrency=1)})
    state = t._config.hosts.get(httpx.URL("https://api.x/"))
    assert state.semaphore is not None
    async with httpx.AsyncClient(transport=t) as client:
        async with client.stream("POST", "https://api.x/", json=chat(50)) as response:
            assert state.semaphore.in_use == 1
            await response.aread()
        assert state.semaphore.in_use == 0
    assert t.stats()["api.x"].tokens_settled == 5


@pytest.mark.anyio
async def test_a_failed_request_gives_its_permit_and_tokens_back() -> None:
    inner, _ = script(httpx.ReadError("reset"))
    t = transport(inner, limits={"api.x": presets.openai(tpm=1000, concurrency=1)})
    async with httpx.AsyncClient(transport=t) as client:
        with pytest.raises(httpx.ReadError):
            await client.post("https://api.x/", json=chat(50))
    state = t._config.hosts.get(httpx.URL("https://api.x/"))
    assert state.semaphore is not None
    assert state.semaphore.in_use == 0
    assert state.tokens_bucket is not None
    assert state.tokens_bucket.stats().admitted_cost == 0


@pytest.mark.anyio
@pytest.mark.parametrize("breaker", [False, True], ids=["retry", "retry with a breaker"])
async def test_the_retry_counts_first_attempts_and_retries(breaker: bool) -> None:
    # The first attempt runs inline (no retry coroutine around it), and through the retry's
    # plan when the retry has a breaker: both count as the retry's own wrapper does.
    limited = httpx.Response(429, headers={"retry-after-ms": "1"}, json={"error": {}})
    inner, seen = script(limited, ok(), ok())
    retry = adm.Retry(**FAST, breaker=adm.CircuitBreaker() if breaker else None)  # type: ignore[arg-type]
    t = transport(inner, retry=retry)
    async with httpx.AsyncClient(transport=t) as client:
        assert (await client.post("https://api.x/", json=chat())).status_code == 200
        assert (await client.post("https://api.x/", json=chat())).status_code == 200
    assert len(seen) == 3
    stats = retry.stats()
    assert (stats.calls, stats.attempts, stats.retries, stats.succeeded) == (2, 3, 1, 2)
    assert stats.in_flight == 0
    assert t.stats()["api.x"].retries == 1


@pytest.mark.anyio
async def test_a_retry_that_gives_up_returns_the_last_response_and_counts_it() -> None:
    inner, seen = script(httpx.Response(503))
    retry = adm.Retry(**{**FAST, "attempts": 2})  # type: ignore[arg-type]
    t = transport(inner, retry=retry)
    async with httpx.AsyncClient(transport=t) as client:
        assert (await client.get("https://api.x/")).status_code == 503
    assert len(seen) == 2
    assert retry.stats().gave_up["attempts"] == 1


class _Hangs(httpx.AsyncBaseTransport):
    """Never answers: sets ``entered`` and waits until cancelled."""

    def __init__(self) -> None:
        self.entered = anyio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.entered.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


@pytest.mark.anyio
async def test_a_cancelled_request_gives_its_permit_back() -> None:
    inner = _Hangs()
    retry = adm.Retry(**FAST)  # type: ignore[arg-type]
    t = adm.httpx.AsyncTransport(
        inner, limits={"api.x": presets.openai(tpm=1000, concurrency=1)}, retry=retry
    )
    state = t._config.hosts.get(httpx.URL("https://api.x/"))
    assert state.semaphore is not None
    assert state.tokens_bucket is not None
    with anyio.fail_after(10):  # (bounded: the request is cancelled long before)
        async with anyio.create_task_group() as tasks:

            async def send() -> None:
                await t.handle_async_request(httpx.Request("POST", "https://api.x/", json=chat(50)))

            tasks.start_soon(send)
            await inner.entered.wait()
            assert state.semaphore.in_use == 1
            tasks.cancel_scope.cancel()
    assert state.semaphore.in_use == 0
    # The request may have reached the provider: its estimate stands (as before the first
    # attempt ran inline).
    assert state.tokens_bucket.stats().admitted_cost == 61
    assert retry.stats().cancelled == 1


class _Chunks(httpx.AsyncByteStream):
    """A body given in pieces; ``closed`` once closed."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.anyio
@pytest.mark.parametrize("preset", ["host", "openai"])
async def test_a_body_in_pieces_is_settled_at_its_usage_or_its_estimate_if_closed_early(
    preset: str,
) -> None:
    body = b'{"id": "x", "usage": {"total_tokens": 7}}'
    pieces = [body[:10], body[10:25], body[25:]]
    streams: list[_Chunks] = []

    def answer(request: httpx.Request) -> httpx.Response:
        streams.append(_Chunks(*pieces))
        return httpx.Response(200, stream=streams[-1])

    inner, _ = script(answer)
    limits = (
        presets.host(concurrency=1) if preset == "host" else presets.openai(tpm=1000, concurrency=1)
    )
    t = transport(inner, limits={"api.x": limits})
    state = t._config.hosts.get(httpx.URL("https://api.x/"))
    assert state.semaphore is not None
    async with httpx.AsyncClient(transport=t) as client:
        async with client.stream("POST", "https://api.x/", json=chat(50)) as response:
            assert b"".join([piece async for piece in response.aiter_raw()]) == body
        assert state.semaphore.in_use == 0
        async with client.stream("POST", "https://api.x/", json=chat(50)) as response:
            assert not response.is_closed  # closed unread: the usage never came
        assert state.semaphore.in_use == 0
    assert [stream.closed for stream in streams] == [True, True]
    if preset == "openai":
        host = t.stats()["api.x"]
        assert (host.tokens_reserved, host.tokens_settled) == (2 * 61, 7 + 61)


@pytest.mark.anyio
async def test_the_breaker_is_per_host() -> None:
    inner, seen = script(lambda r: httpx.Response(503 if r.url.host == "down" else 200))
    t = transport(inner, retry=adm.Retry(attempts=1))
    async with httpx.AsyncClient(transport=t) as client:
        # The breaker's defaults: open once 20 calls are half failures (here: all).
        for _ in range(20):
            assert (await client.get("https://down/")).status_code == 503
        with pytest.raises(adm.CircuitOpen):
            await client.get("https://down/")
        assert (await client.get("https://up/")).status_code == 200
    assert len(seen) == 21


def test_other_hosts_are_kept_for_the_most_recent_ones_only() -> None:
    inner, _ = script(ok())
    t = adm.httpx.Transport(inner, max_hosts=3, limits={"pinned": presets.host(concurrency=1)})
    with httpx.Client(transport=t) as client:
        for i in range(10):
            client.get(f"https://h{i}.example/")
        client.get("https://pinned/")
        client.get("https://other:8443/")
    assert sorted(t.stats()) == ["h8.example", "h9.example", "other:8443", "pinned"]


def test_metrics_are_per_host_never_per_url() -> None:
    inner, _ = script(ok())
    t = adm.httpx.Transport(inner)
    with httpx.Client(transport=t) as client:
        client.get("https://metrics.example/v1/secret?key=1")
    families = {f.name: f for f in adm.metrics.collect()}
    samples = [s for s in families["admission_http_requests"].samples]
    assert {"host": "metrics.example"} in [dict(s.labels) for s in samples]
    assert not any("secret" in str(s.labels) for f in families.values() for s in f.samples)
    del t


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(TypeError, match="breaker"):
        adm.httpx.AsyncTransport(breaker="always")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry"):
        adm.httpx.AsyncTransport(retry=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="presets"):
        adm.httpx.AsyncTransport(limits={"x": {"rpm": 1}})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="max_hosts"):
        adm.httpx.AsyncTransport(max_hosts=0)


BAD_ESTIMATES = pytest.mark.parametrize(
    ("estimate", "error"),
    [
        (-5, ValueError),
        (float("nan"), TypeError),
        (2.5, TypeError),
        (True, TypeError),
        (1 << 64, ValueError),
    ],
    ids=["negative", "nan", "float", "bool", "huge"],
)


@BAD_ESTIMATES
@pytest.mark.parametrize("path", ["immediate", "waiting"])
@pytest.mark.anyio
async def test_a_bad_estimate_is_a_clear_error_and_takes_nothing(
    estimate: Any, error: type[Exception], path: str
) -> None:
    """A user ``estimate`` that is not a number of tokens raises an error naming it, before
    anything is taken, whether the request would be admitted at once or wait (it used to be
    an unclear error, or sent: a bool as 1 token, a float truncated)."""
    answers = iter([100, estimate])  # (the first, on the waiting path, empties the bucket)
    preset = presets.openai(tpm=100, concurrency=2, estimate=lambda request: next(answers))
    inner, seen = script(httpx.Response(200, json={}))  # (no usage: the estimate stands)
    t = transport(inner, limits={"api.x": preset})
    state = t._config.hosts.get(httpx.URL("https://api.x/"))
    assert state.tokens_bucket is not None
    assert state.semaphore is not None
    async with httpx.AsyncClient(transport=t) as client:
        if path == "waiting":
            await client.post("https://api.x/", json=chat())
        else:
            next(answers)
        assert state.tokens_bucket.peek(1).allowed == (path == "immediate")
        with pytest.raises(error, match="estimate must return a number of tokens"):
            await client.post("https://api.x/", json=chat())
    assert len(seen) == (1 if path == "waiting" else 0)
    assert state.semaphore.in_use == 0
    assert state.tokens_bucket.stats().admitted_cost == (100 if path == "waiting" else 0)


@BAD_ESTIMATES
def test_a_bad_estimate_is_a_clear_error_in_threads(estimate: Any, error: type[Exception]) -> None:
    preset = presets.openai(tpm=100, estimate=lambda request: estimate)
    inner, seen = script(ok())
    t = adm.httpx.Transport(inner, limits={"api.x": preset})
    with (
        httpx.Client(transport=t) as client,
        pytest.raises(error, match="estimate must return a number of tokens"),
    ):
        client.post("https://api.x/", json=chat())
    assert seen == []


def test_an_estimate_above_the_bucket_is_the_bucket() -> None:
    """A valid estimate larger than the tokens bucket reserves all of it (the provider would
    refuse more anyway), as before."""
    preset = presets.openai(tpm=100, estimate=lambda request: (1 << 64) - 1)
    inner, _ = script(httpx.Response(200, json={}))
    t = adm.httpx.Transport(inner, limits={"api.x": preset})
    with httpx.Client(transport=t) as client:
        assert client.post("https://api.x/", json=chat()).status_code == 200
    assert t.stats()["api.x"].tokens_reserved == 100


@pytest.mark.parametrize(("limit", "mirrors"), [("100", True), ("1000", False), (None, False)])
def test_a_reset_times_the_refill_only_of_a_bucket_that_mirrors_the_quota(
    limit: str | None, mirrors: bool
) -> None:
    """The provider's reset says when its own quota is full: it holds back a bucket no
    larger than that quota until then; a larger quota (or an unstated one) says nothing of
    this bucket's refill, which keeps its own rate."""
    headers = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6m0s"}
    if limit is not None:
        headers["x-ratelimit-limit-tokens"] = limit
    inner, _ = script(httpx.Response(200, json={}, headers=headers))
    t = adm.httpx.Transport(inner, limits={"api.x": presets.openai(tpm=100)})
    with httpx.Client(transport=t) as client:
        assert client.post("https://api.x/", json=chat(10)).status_code == 200
    bucket = t._config.hosts.get(httpx.URL("https://api.x/")).tokens_bucket
    assert bucket is not None
    wait = bucket.peek(100).retry_after
    # (synced empty: full after the provider's 6 minutes, or after the bucket's own minute)
    assert (300.0 < wait <= 360.0) if mirrors else (30.0 < wait <= 60.0)


def _in_a_fresh_interpreter(code: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_reaper_thread_starts_with_the_first_body_not_with_a_transport() -> None:
    """A process that only makes transports (a pre-fork master) has no thread of ours."""
    _in_a_fresh_interpreter(
        """
        import threading
        import admission.httpx as h
        h.AsyncTransport(); h.Transport()
        names = [t.name for t in threading.enumerate()]
        assert "admission.httpx reaper" not in names, names
        assert h._reaper.idle
        """
    )


def test_the_reaper_survives_a_failing_finish_and_a_raising_unraisablehook() -> None:
    _in_a_fresh_interpreter(
        """
        import sys, threading
        import admission.httpx as h

        def hook(unraisable):
            raise RuntimeError("a hook that raises")

        sys.unraisablehook = hook
        finished = threading.Event()

        class Fails:
            def finish(self):
                raise KeyboardInterrupt  # even a BaseException

        class Works:
            def finish(self):
                finished.set()

        h._reaper.start()
        h._reaper.put(Fails())
        h._reaper.put(Works())
        assert finished.wait(30), "the reaper stopped after a failing finish"
        """
    )
