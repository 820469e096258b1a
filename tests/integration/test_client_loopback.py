"""The client layer against a rate-limited LLM provider on loopback (issue 15).

The provider (`llm_provider.py`, a child process) enforces requests and tokens per second
(capacity one second's worth, refilled continuously, as OpenAI's per-minute quotas are),
50 requests in service, answers 429 with OpenAI's (or Anthropic's) headers and 1 % of
admitted requests with 503. Through `admission.httpx.AsyncTransport` configured with the
same limits, 2,000 calls get through with no failure, at most 1 % of requests see a 429,
and the throughput is at least 95 % of what the provider allows over the run (its burst
plus its rate times the wall time). When tokens per second bind instead, settling each
reservation at the response's usage is what gives the provider its whole token rate.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import admission as adm

PROVIDER = Path(__file__).with_name("llm_provider.py")
RPS = 50  # the provider's requests per second (and its burst)
TPS = 5_000  # tokens per second: not the binding limit here
CALLS = 2_000


@dataclass
class Provider:
    process: subprocess.Popen[str]
    port: int
    rps: float
    tps: float

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write("stats\n")
        self.process.stdin.flush()
        return dict(json.loads(self.process.stdout.readline()))


def start_provider(*args: str, rps: float = RPS, tps: float = TPS) -> Provider:
    process = subprocess.Popen(
        [sys.executable, "-I", str(PROVIDER), f"--rpm={rps}", f"--tpm={tps}", "--period=1", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    # A bounded wait for the port line: a child that never starts is killed, not awaited.
    timer = threading.Timer(30, process.kill)
    timer.start()
    try:
        hello = process.stdout.readline()
    finally:
        timer.cancel()
    if not hello:
        raise RuntimeError(f"the provider did not start (status {process.wait(5)})")
    return Provider(process, int(json.loads(hello)["port"]), rps, tps)


def stop_provider(provider: Provider) -> None:
    process = provider.process
    assert process.stdin is not None
    process.stdin.close()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, 9)
        process.wait(10)
    finally:
        assert process.stdout is not None
        process.stdout.close()


@pytest.fixture
def provider(request: pytest.FixtureRequest) -> Iterator[Provider]:
    args = getattr(request, "param", ("--fail-rate=0.01",))
    p = start_provider(*args)
    try:
        yield p
    finally:
        stop_provider(p)


def body(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "model": "test-1",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": f"question number {i:05d}, please answer"}],
        **extra,
    }


def transport_for(provider: Provider, preset: Any = adm.presets.openai) -> adm.httpx.AsyncTransport:
    return adm.httpx.AsyncTransport(
        limits={
            f"127.0.0.1:{provider.port}": preset(
                rpm=provider.rps, tpm=provider.tps, concurrency=50, period=1.0
            )
        },
        retry=adm.Retry(attempts=8, deadline="60s", base="50ms", cap="2s"),
        retry_post=True,
    )


def check_throughput(stats: dict[str, Any], provider: Provider, ok: int) -> float:
    """The calls served over what the provider allowed from the first to the last one."""
    span = stats["last_ok"] - stats["first_ok"]
    allowed = provider.rps + provider.rps * span  # its burst, then its rate
    return min(ok, CALLS) / min(allowed, CALLS) if allowed >= CALLS else ok / allowed


async def run_calls(client: httpx.AsyncClient, url: str, n: int, **extra: Any) -> list[int]:
    async def one(i: int) -> int:
        response = await client.post(url, json=body(i, **extra))
        return response.status_code

    return await asyncio.gather(*(one(i) for i in range(n)))


def test_2000_calls_no_failure_few_429s_full_throughput(provider: Provider) -> None:
    transport = transport_for(provider)

    async def main() -> list[int]:
        async with httpx.AsyncClient(transport=transport, timeout=30) as client:
            return await run_calls(client, f"{provider.base}/v1/chat/completions", CALLS)

    start = time.monotonic()
    statuses = asyncio.run(main())
    wall = time.monotonic() - start
    stats = provider.stats()
    host = transport.stats()[f"127.0.0.1:{provider.port}"]
    assert statuses.count(200) == CALLS, {s: statuses.count(s) for s in set(statuses)}
    assert stats["ok"] == CALLS
    assert stats["rate_limited"] <= 0.01 * stats["received"], stats
    assert stats["peak_in_service"] <= 50
    assert stats["unavailable"] > 0, "the provider's 503s were exercised (and retried)"
    assert host.requests == stats["received"]
    assert host.rate_limited == stats["rate_limited"]
    assert host.retries == stats["received"] - CALLS
    # The provider's whole allowance: its burst plus its rate over the time it served.
    span = stats["last_ok"] - stats["first_ok"]
    allowed = RPS + RPS * span
    assert stats["received"] >= 0.95 * min(allowed, stats["received"] + 1) or True
    throughput = stats["received"] / allowed
    assert throughput >= 0.95, (throughput, span, wall, stats)
    # Tokens: settled at what the provider counted, nothing lost to the estimates.
    assert host.tokens_settled == stats["tokens_used"], (host, stats)
    assert host.tokens_reserved > host.tokens_settled


# The token-bound run: the provider allows 1,000 requests/s and 50 in service (neither
# binds) but 10,000 tokens/s; each request asks for up to 256 tokens with a ~400-character
# prompt (an estimate of 256 + 101 = 357) and uses 101 + 20..120 (about 170): half its
# estimate, so only the refunds of settling let the client use the provider's token rate.
TOKEN_TPS = 10_000
TOKEN_CALLS = 800


def token_body(i: int) -> dict[str, Any]:
    prompt = f"question {i:05d}: " + "please summarise this paragraph of text. " * 10
    return {"model": "test-1", "max_tokens": 256, "messages": [{"role": "user", "content": prompt}]}


def token_run(provider: Provider, calls: int) -> tuple[list[int], dict[str, Any], Any, float]:
    """``calls`` token-heavy calls through the openai preset at the provider's limits: the
    statuses, the provider's stats, the host's stats, and the token throughput (tokens the
    provider served over what it allowed from the first call served to the last)."""
    transport = transport_for(provider)

    async def main() -> list[int]:
        async with httpx.AsyncClient(transport=transport, timeout=30) as client:
            url = f"{provider.base}/v1/chat/completions"

            async def one(i: int) -> int:
                return (await client.post(url, json=token_body(i))).status_code

            return await asyncio.gather(*(one(i) for i in range(calls)))

    statuses = asyncio.run(main())
    stats = provider.stats()
    host = transport.stats()[f"127.0.0.1:{provider.port}"]
    span = stats["last_ok"] - stats["first_ok"]
    throughput = stats["tokens_used"] / (provider.tps + provider.tps * span)
    return statuses, stats, host, throughput


def test_when_tokens_bind_settling_gives_the_provider_its_token_rate() -> None:
    """Tokens per second are the binding limit: through the transport, no failure, at most
    1 % of requests see a 429, and the provider serves at least 95 % of its token rate,
    because each response's usage settles the reservation (about half of each estimate
    comes back). Against the same provider answering without usage (the estimates stand:
    what a client that never settles gets), the token throughput is far lower."""
    completion = "--completion=20-120"
    p = start_provider(completion, "--concurrency=50", rps=1_000, tps=TOKEN_TPS)
    try:
        statuses, stats, host, throughput = token_run(p, TOKEN_CALLS)
    finally:
        stop_provider(p)
    assert statuses.count(200) == TOKEN_CALLS, {s: statuses.count(s) for s in set(statuses)}
    assert stats["ok"] == TOKEN_CALLS
    assert stats["rate_limited"] <= 0.01 * stats["received"], stats
    # Neither the request rate nor the concurrency bound: the tokens did.
    span = stats["last_ok"] - stats["first_ok"]
    assert stats["received"] / span < 0.2 * 1_000, stats
    # (How many are in service at once depends on how fast the host answers, and the
    # transport's own concurrency=50 caps it: what matters is that none was refused for it.)
    assert stats["limited_by"]["requests"] == stats["limited_by"]["concurrency"] == 0, stats
    assert host.tokens_settled == stats["tokens_used"]
    assert host.tokens_reserved > 1.8 * host.tokens_settled, host  # (refunds were large)
    assert throughput >= 0.95, (throughput, span, stats)

    p = start_provider(completion, "--concurrency=50", "--no-usage", rps=1_000, tps=TOKEN_TPS)
    try:
        statuses, stats, host, kept = token_run(p, TOKEN_CALLS // 4)
    finally:
        stop_provider(p)
    assert statuses.count(200) == TOKEN_CALLS // 4
    assert host.tokens_settled == host.tokens_reserved  # (no usage: the estimates stood)
    assert kept < 0.75 * throughput, (kept, throughput)


def test_a_429_pauses_every_caller_of_the_host() -> None:
    """A client that knows no rate (concurrency only) against a provider that allows 20/s
    and answers 429 with ``Retry-After: 1``: each 429 pauses the host for every caller, so
    a pause catches only the requests already in flight, never a storm of retries."""
    concurrency = 10
    p = start_provider("--concurrency=50", "--whole-seconds", rps=20, tps=1e9)
    try:
        transport = adm.httpx.AsyncTransport(
            limits={f"127.0.0.1:{p.port}": adm.presets.host(concurrency=concurrency)},
            retry=adm.Retry(attempts=20, deadline="120s", base="10ms", cap="100ms"),
            retry_post=True,
        )

        async def main() -> list[int]:
            async with httpx.AsyncClient(transport=transport, timeout=30) as client:
                return await run_calls(client, f"{p.base}/v1/chat/completions", 100)

        statuses = asyncio.run(main())
        stats = p.stats()
    finally:
        stop_provider(p)
    host = transport.stats()[f"127.0.0.1:{p.port}"]
    assert statuses.count(200) == 100
    assert host.pauses >= 1
    assert host.rate_limited == stats["rate_limited"] > 0
    # Every 429 came from a request sent before the pause it then joined (at most the
    # permits in flight per pause); without the shared pause, each caller would retry on
    # its own short backoff, many times a second.
    assert stats["rate_limited"] <= concurrency * host.pauses, (stats, host)


@pytest.mark.parametrize("vendor", ["openai", "anthropic"])
def test_streamed_answers_settle_when_the_stream_closes(vendor: str) -> None:
    p = start_provider(f"--vendor={vendor}")
    preset = adm.presets.openai if vendor == "openai" else adm.presets.anthropic
    try:
        transport = transport_for(p, preset)
        key = f"127.0.0.1:{p.port}"

        async def main() -> list[int]:
            used = []
            async with httpx.AsyncClient(transport=transport, timeout=30) as client:
                for i in range(20):
                    request = body(i, stream=True)
                    async with client.stream(
                        "POST", f"{p.base}/v1/chat/completions", json=request
                    ) as r:
                        assert r.headers["content-type"] == "text/event-stream"
                        before = transport.stats()[key].tokens_settled
                        lines = r.aiter_lines()
                        assert (await lines.__anext__()).startswith("data: ")
                        # Streaming, not closed yet: nothing settled.
                        assert transport.stats()[key].tokens_settled == before
                        async for _ in lines:
                            pass
                    used.append(transport.stats()[key].tokens_settled - before)
            return used

        used = asyncio.run(main())
        stats = p.stats()
    finally:
        stop_provider(p)
    assert stats["streams"] == 20
    assert sum(used) == stats["tokens_used"]
    assert all(0 < u < 64 + 20 for u in used)


def test_openai_sdk_through_the_transport(provider: Provider) -> None:
    """openai-python's client with ``max_retries=0`` (the transport retries) and this
    transport: the same calls, the same guarantees."""
    openai = pytest.importorskip("openai")
    transport = transport_for(provider)

    async def main() -> list[str]:
        async with httpx.AsyncClient(transport=transport, timeout=30) as http:
            client = openai.AsyncOpenAI(
                api_key="test", base_url=f"{provider.base}/v1", http_client=http, max_retries=0
            )

            async def one(i: int) -> str:
                answer = await client.chat.completions.create(**body(i))
                return str(answer.choices[0].message.content)

            # 2,000 at once into the transport, whose limiter is what the test checks
            return await asyncio.gather(*(one(i) for i in range(CALLS)))  # noqa: ADM101

    answers = asyncio.run(main())
    stats = provider.stats()
    assert answers == ["ok"] * CALLS
    assert stats["ok"] == CALLS
    assert stats["rate_limited"] <= 0.01 * stats["received"], stats
    span = stats["last_ok"] - stats["first_ok"]
    assert stats["received"] / (RPS + RPS * span) >= 0.95, stats
    host = transport.stats()[f"127.0.0.1:{provider.port}"]
    assert host.tokens_settled == stats["tokens_used"]


def test_the_sync_transport_in_threads(provider: Provider) -> None:
    transport = adm.httpx.Transport(
        limits={
            f"127.0.0.1:{provider.port}": adm.presets.openai(
                rpm=RPS, tpm=TPS, concurrency=16, period=1.0
            )
        },
        retry=adm.Retry(attempts=8, deadline="60s", base="50ms", cap="2s"),
        retry_post=True,
    )
    statuses: list[int] = []
    lock = threading.Lock()
    with httpx.Client(transport=transport, timeout=30) as client:

        def worker(start: int) -> None:
            for i in range(start, 400, 16):
                code = client.post(f"{provider.base}/v1/chat/completions", json=body(i)).status_code
                with lock:
                    statuses.append(code)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    stats = provider.stats()
    assert statuses.count(200) == 400
    assert stats["rate_limited"] <= 0.01 * stats["received"] + 1, stats
    host = transport.stats()[f"127.0.0.1:{provider.port}"]
    assert host.tokens_settled == stats["tokens_used"]


# -- what a caller drops: unclosed responses, a retry_if that raises -------------------------
#
# A response holds its host's concurrency permit and its token reservation until its body is
# closed. These tests drop responses (never closed, or judged by a `retry_if` that raises) on
# a host with a small concurrency, against the provider on loopback (no 503s: every retry
# here is the `retry_if`'s), and check that the permits come back and the tokens are settled.

QUIET_RPS = 1_000  # neither limit binds: only the host's concurrency holds anyone back
BOUND = 20.0  # seconds: the most any wait below may take


@pytest.fixture(scope="module")
def quiet() -> Iterator[Provider]:
    p = start_provider(rps=QUIET_RPS, tps=1_000_000)
    try:
        yield p
    finally:
        stop_provider(p)


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param(
            ("asyncio", {"use_uvloop": True}),
            id="uvloop",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed"
            ),
        ),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


def small_host(p: Provider, concurrency: int) -> dict[str, Any]:
    """The transports' arguments: the provider's host at ``concurrency``, its tokens
    reserved and settled (limits far above the run)."""
    preset = adm.presets.openai(rpm=QUIET_RPS, tpm=1_000_000, concurrency=concurrency, period=1.0)
    return {"limits": {f"127.0.0.1:{p.port}": preset}, "retry_post": True}


def host_of(transport: adm.httpx.AsyncTransport | adm.httpx.Transport, p: Provider) -> Any:
    """The transport's host of the provider (its semaphore: who holds and waits)."""
    return transport._config.hosts.get(httpx.URL(p.base))


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        assert time.monotonic() < deadline, f"not within {BOUND} s: {what}"
        time.sleep(0.005)


async def wait_until_async(condition: Any, what: str) -> None:
    with anyio.fail_after(BOUND):
        while not condition():  # noqa: ASYNC110 - native counters: no event to wait on
            await anyio.sleep(0.005)


def drop(responses: list[httpx.Response]) -> None:
    """Drops the only references to ``responses`` (never closed), and collects."""
    responses.clear()
    gc.collect()


N = 2


def check_settled_at_the_estimates(transport: Any, p: Provider, dropped: int, used: int) -> None:
    """Every request had the same estimate; the ``dropped`` ones stand at it, the one read
    to its end at its ``used`` tokens."""
    stats = transport.stats()[f"127.0.0.1:{p.port}"]
    estimate, rest = divmod(stats.tokens_reserved, dropped + 1)
    assert rest == 0
    assert estimate > used > 0
    assert stats.tokens_settled == dropped * estimate + used


@pytest.mark.anyio
async def test_unclosed_streamed_responses_give_their_permits_back_when_collected(
    quiet: Provider,
) -> None:
    """``concurrency=N``: N streamed responses never closed, then one more request, which
    waits for a permit; the N are dropped and collected: it goes through, their tokens are
    settled at the estimate, and a ResourceWarning names their URL (it was blocked for good:
    their permits were never given back)."""
    transport = adm.httpx.AsyncTransport(**small_host(quiet, N))
    host = host_of(transport, quiet)
    url = f"{quiet.base}/v1/chat/completions"
    async with httpx.AsyncClient(transport=transport, timeout=BOUND) as client:
        dropped = [
            await client.send(client.build_request("POST", url, json=body(i)), stream=True)
            for i in range(N)
        ]
        assert host.semaphore.in_use == N
        used: list[int] = []

        async def one_more() -> None:
            response = await client.post(url, json=body(N))
            used.append(response.json()["usage"]["total_tokens"])

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(one_more)
            await wait_until_async(lambda: host.semaphore.waiting == 1, "the next one waits")
            with pytest.warns(ResourceWarning, match=r"127\.0\.0\.1:\d+/v1/chat/completions"):
                drop(dropped)
            await wait_until_async(lambda: len(used) == 1, "the next one goes through")
    assert host.semaphore.in_use == 0
    check_settled_at_the_estimates(transport, quiet, N, used[0])


def test_unclosed_streamed_responses_give_their_permits_back_when_collected_in_threads(
    quiet: Provider,
) -> None:
    """The same with `admission.httpx.Transport`: the next request waits in its thread."""
    transport = adm.httpx.Transport(**small_host(quiet, N))
    host = host_of(transport, quiet)
    url = f"{quiet.base}/v1/chat/completions"
    with httpx.Client(transport=transport, timeout=BOUND) as client:
        dropped = [
            client.send(client.build_request("POST", url, json=body(i)), stream=True)
            for i in range(N)
        ]
        assert host.semaphore.in_use == N
        used: list[int] = []
        thread = threading.Thread(
            target=lambda: used.append(
                client.post(url, json=body(N)).json()["usage"]["total_tokens"]
            ),
            daemon=True,  # (one blocked for good must not keep the test run alive)
        )
        thread.start()
        try:
            wait_until(lambda: host.semaphore.waiting == 1, "the next one waits")
            with pytest.warns(ResourceWarning, match=r"127\.0\.0\.1:\d+/v1/chat/completions"):
                drop(dropped)
        finally:
            thread.join(BOUND)
        assert not thread.is_alive(), "the next one never went through"
    assert len(used) == 1
    assert host.semaphore.in_use == 0
    check_settled_at_the_estimates(transport, quiet, N, used[0])


class Refusal(Exception):
    """What the tests' ``retry_if`` raises."""


class Judge:
    """A ``retry_if`` that retries the first ``retry`` responses, then raises (``fail``) or
    accepts; counts its calls."""

    def __init__(self, retry: int, fail: bool) -> None:
        self.retry, self.fail = retry, fail
        self.calls = 0
        self.error = Refusal("the caller's retry_if raised")

    def __call__(self, response: httpx.Response) -> bool:
        self.calls += 1
        assert response.status_code == 200
        if self.calls <= self.retry:
            return True
        if self.fail:
            raise self.error
        return False


# How each path meets the retry_if: the first response judged inline (the async transport's
# own first attempt; the sync one's is the retry wrapper's), a later one by the retry's plan,
# and every one by the plan when the Retry has a breaker.
PATHS = {
    "first": (0, None),
    "retried": (1, None),
    "breaker": (0, "breaker"),
}


def judged_transport(
    cls: Any, p: Provider, judge: Judge, path: str
) -> adm.httpx.AsyncTransport | adm.httpx.Transport:
    retry = adm.Retry(
        attempts=3,
        base="1ms",
        cap="2ms",
        retry_if=judge,
        breaker=adm.CircuitBreaker() if PATHS[path][1] else None,
    )
    return cls(**small_host(p, 1), retry=retry)  # type: ignore[no-any-return]


@pytest.mark.anyio
@pytest.mark.parametrize("path", PATHS)
async def test_a_retry_if_that_raises_closes_the_response(quiet: Provider, path: str) -> None:
    """The caller's exception goes up unchanged; the response it was judging is closed: its
    permit back (``concurrency=1``: a retried response's too, or the retry would wait on
    itself), its tokens settled at the estimate."""
    judge = Judge(PATHS[path][0], fail=True)
    transport = judged_transport(adm.httpx.AsyncTransport, quiet, judge, path)
    host = host_of(transport, quiet)
    async with httpx.AsyncClient(transport=transport, timeout=BOUND) as client:
        with anyio.fail_after(BOUND), pytest.raises(Refusal) as raised:
            await client.post(f"{quiet.base}/v1/chat/completions", json=body(0))
    assert raised.value is judge.error
    assert judge.calls == PATHS[path][0] + 1
    assert host.semaphore.in_use == 0
    stats = transport.stats()[f"127.0.0.1:{quiet.port}"]
    assert stats.requests == PATHS[path][0] + 1
    assert stats.tokens_settled == stats.tokens_reserved  # (every one at its estimate)
    assert transport._config.retry.stats().in_flight == 0


def post_in_a_thread(transport: Any, p: Provider) -> httpx.Response:
    """One POST through the sync ``transport``, in a thread joined within `BOUND` (a retry
    waiting for its own response's permit would never end; a daemon: it does not keep the
    run alive); its response, or what it raised."""
    outcome: list[Any] = []

    def call() -> None:
        with httpx.Client(transport=transport, timeout=BOUND) as client:
            try:
                outcome.append(client.post(f"{p.base}/v1/chat/completions", json=body(0)))
            except BaseException as error:  # (raised again in the test's thread)
                outcome.append(error)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(BOUND)
    assert not thread.is_alive(), "the retry waited for the permit of its own response"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("path", PATHS)
def test_a_retry_if_that_raises_closes_the_response_in_threads(quiet: Provider, path: str) -> None:
    judge = Judge(PATHS[path][0], fail=True)
    transport = judged_transport(adm.httpx.Transport, quiet, judge, path)
    host = host_of(transport, quiet)
    with pytest.raises(Refusal) as raised:
        post_in_a_thread(transport, quiet)
    assert raised.value is judge.error
    assert judge.calls == PATHS[path][0] + 1
    assert host.semaphore.in_use == 0
    stats = transport.stats()[f"127.0.0.1:{quiet.port}"]
    assert stats.requests == PATHS[path][0] + 1
    assert stats.tokens_settled == stats.tokens_reserved
    assert transport._config.retry.stats().in_flight == 0


@pytest.mark.anyio
async def test_retry_if_is_asked_once_per_response(quiet: Provider) -> None:
    """Two responses, the first retried: two questions (the first was asked twice). With
    ``concurrency=1``, the retried one is closed before the retry: else the second attempt
    would wait for its permit for good."""
    judge = Judge(1, fail=False)
    transport = judged_transport(adm.httpx.AsyncTransport, quiet, judge, "first")
    async with httpx.AsyncClient(transport=transport, timeout=BOUND) as client:
        with anyio.fail_after(BOUND):
            response = await client.post(f"{quiet.base}/v1/chat/completions", json=body(0))
    assert response.status_code == 200
    assert judge.calls == 2
    # (Asked twice, the first answer was retried, then taken at the second question.)
    stats = transport.stats()[f"127.0.0.1:{quiet.port}"]
    assert (stats.requests, stats.retries) == (2, 1)
    assert host_of(transport, quiet).semaphore.in_use == 0


def test_retry_if_is_asked_once_per_response_in_threads(quiet: Provider) -> None:
    judge = Judge(1, fail=False)
    transport = judged_transport(adm.httpx.Transport, quiet, judge, "first")
    response = post_in_a_thread(transport, quiet)
    assert response.status_code == 200
    assert judge.calls == 2
    # (Asked twice, the first answer was retried, then taken at the second question.)
    stats = transport.stats()[f"127.0.0.1:{quiet.port}"]
    assert (stats.requests, stats.retries) == (2, 1)
    assert host_of(transport, quiet).semaphore.in_use == 0
