"""The main demo (`make demo`): run small, in-process, and check what it claims.

Unbounded ``asyncio.gather`` against the local provider overruns its limits; the same calls
bounded with admission get no 429 and no error, and never exceed the provider's concurrency.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys

import pytest

try:
    import httpx
except ImportError:  # pragma: no cover - the Makefile installs it
    pytest.fail(
        "httpx is not installed: the demo needs it (requirements/dev.txt and the `demo` "
        "extra list it; `make test` and `make demo` install them)",
        pytrace=False,
    )

from admission import cli
from admission.demo import llm, outage
from admission.demo.server import ProviderLimits, ProviderServer

# 10 at once with 40-80 ms each: the unbounded calls overrun the provider even when this
# machine is slow to send them; the bounded ones are paced by the concurrency limit.
SMALL = llm.DemoConfig(
    calls=200, server_concurrency=10, server_rate=400.0, latency_ms=(40.0, 80.0), progress=False
)
OPTIONS = (
    "--calls",
    "--server-concurrency",
    "--server-rate",
    "--server-burst",
    "--latency-ms",
    "--client-limit",
    "--client-rate",
    "--client-burst",
    "--seed",
    "--no-progress",
    "--outage-seconds",
    "--no-outage",
)


@pytest.fixture(scope="module")
def result() -> llm.DemoResult:
    out = io.StringIO()
    res = asyncio.run(llm.run_demo(SMALL, out=out))
    text = out.getvalue()
    assert "unbounded gather" in text
    assert "with admission" in text
    return res


def test_bounded_run_has_no_429_and_no_error(result: llm.DemoResult) -> None:
    b = result.bounded
    assert (b.ok, b.rejected, b.errors) == (SMALL.calls, 0, 0), b.error_kinds
    assert result.ok
    assert b.server.ok == SMALL.calls
    assert b.server.rejected == 0


def test_bounded_run_stays_within_the_provider_limits(result: llm.DemoResult) -> None:
    b = result.bounded
    assert b.peak_in_flight_server <= SMALL.server_concurrency
    assert b.peak_in_service_server <= SMALL.server_concurrency
    assert b.peak_in_flight_client <= SMALL.server_concurrency
    # Sockets: one per call in flight at most (keep-alive reuses them).
    assert b.peak_sockets <= SMALL.server_concurrency
    # Never faster than the provider allows: the rate after a burst, and the concurrency.
    assert b.wall >= (SMALL.calls - SMALL.burst) / SMALL.server_rate
    assert b.wall >= SMALL.calls / SMALL.server_concurrency * 0.040 * 0.9
    assert b.p50 is not None
    assert b.p99 is not None


def test_unbounded_run_overruns_the_provider(result: llm.DemoResult) -> None:
    u, b = result.unbounded, result.bounded
    assert u.ok + u.rejected + u.errors == SMALL.calls
    assert u.peak_in_flight_client > b.peak_in_flight_client
    assert u.peak_in_flight_client > SMALL.server_concurrency
    assert u.peak_sockets > b.peak_sockets
    assert u.rejected > 0  # the provider refused what it could not take
    # The provider never served more than its limit, whatever it was sent.
    assert u.peak_in_service_server <= SMALL.server_concurrency


def test_report_has_every_row(result: llm.DemoResult) -> None:
    table = llm.report(result)
    for row in (
        "succeeded (200)",
        "rejected (429)",
        "errors",
        "peak in flight, client",
        "peak in flight, server",
        "peak open sockets",
        "wall time",
        "latency p50",
        "latency p99",
    ):
        assert row in table


def test_the_transport_run_gets_every_call_through(result: llm.DemoResult) -> None:
    """Issue 15: the same naive gather through adm.httpx.AsyncTransport: every call
    succeeds (429s it saw were retried), nothing charged beyond the responses' usage."""
    t = result.transport
    assert t is not None
    assert (t.ok, t.errors) == (t.calls, 0)
    assert t.retries >= t.rejected  # every 429 seen was retried
    assert t.tokens_wasted == 0
    assert t.peak_in_flight_server <= SMALL.server_concurrency
    table = llm.report(result)
    assert "admission transport" in table
    assert "tokens wasted (over-estimates)" in table


def test_cli_exit_code_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        [
            *("demo", "--calls", "60", "--server-rate", "600", "--latency-ms", "5-15"),
            *("--no-progress", "--no-outage"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "rejected (429)" in out
    assert "peak open sockets" in out


def test_a_client_above_the_provider_limits_fails_the_demo() -> None:
    config = llm.DemoConfig(
        calls=80,
        server_concurrency=5,
        server_rate=1000.0,
        latency_ms=(20.0, 30.0),
        client_limit=40,
        progress=False,
    )
    res = asyncio.run(llm.run_demo(config))
    assert res.bounded.rejected > 0
    assert not res.ok


def test_help_documents_every_option() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "admission", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for option in OPTIONS:
        assert option in done.stdout


def test_threads_demo_is_still_there(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["threads-demo", "--help"])
    assert exc.value.code == 0
    assert "--threads" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--calls", "0"],
        ["demo", "--server-rate", "-1"],
        ["demo", "--latency-ms", "60-20"],
        ["demo", "--client-limit", "many"],
    ],
)
def test_bad_options_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_provider_answers_like_an_llm_api_and_429s_beyond_its_limits() -> None:
    async def scenario() -> None:
        limits = ProviderLimits(concurrency=2, rate=1000.0, burst=1000, latency=(0.05, 0.05))
        async with ProviderServer(limits) as server:
            assert server.url.startswith("http://127.0.0.1:")
            async with httpx.AsyncClient(trust_env=False) as client:
                body = {"messages": [{"role": "user", "content": "hi"}]}
                answers = await asyncio.gather(
                    *(client.post(server.url, json=body) for _ in range(4))
                )
                statuses = sorted(r.status_code for r in answers)
                assert statuses == [200, 200, 429, 429]
                refused = next(r for r in answers if r.status_code == 429)
                assert int(refused.headers["retry-after"]) >= 1
                assert refused.json()["error"]["type"] == "rate_limit_exceeded"
                ok = next(r for r in answers if r.status_code == 200)
                assert ok.json()["choices"][0]["message"]["role"] == "assistant"
                assert (await client.get(server.url)).status_code == 405
                assert (await client.post(server.url + "x", json=body)).status_code == 404
                assert (await client.post(server.url, content=b"{")).status_code == 400
            stats = await server.stats()
            assert stats.ok == 2
            assert stats.rejected == 2
            assert stats.peak_in_service == 2
            assert stats.bad_requests == 3

    asyncio.run(scenario())


# --- the retry scenario (issue 14) -----------------------------------------------------------

SHORT = outage.OutageConfig(duration=4.0, outage_seconds=1.5)


@pytest.fixture(scope="module")
def outage_result() -> outage.OutageResult:
    out = io.StringIO()
    res = asyncio.run(outage.run_outage(SHORT, out=out))
    text = out.getvalue()
    for row in (
        "naive retries",
        "adm.Retry + breaker + budget",
        "requests sent to the provider",
        "  succeeded",
        "retry amplification",
        "requests sent to the provider per second",
    ):
        assert row in text
    return res


def test_outage_runs_count_every_call_and_request(outage_result: outage.OutageResult) -> None:
    assert [r.name for r in outage_result.runs] == [s.name for s in outage.STRATEGIES]
    for run in outage_result.runs:
        assert run.calls == SHORT.calls == sum(run.arrivals)
        assert run.succeeded + run.failed == run.calls
        assert run.requests == sum(run.per_second) == sum(run.statuses.values())
        # What the client sent is what the provider saw, 503s included.
        assert run.server.requests == run.requests
        assert run.server.ok == run.statuses.get("200", 0) == run.succeeded
        assert run.server.unavailable == run.statuses.get("503", 0)
        assert run.server.rejected == run.statuses.get("429", 0)
        # A call sends at least one request unless the open breaker refused it at once.
        assert 0 <= run.unsent <= run.failed
        assert run.calls - run.unsent <= run.requests <= outage.NAIVE_ATTEMPTS * run.calls
        assert run.amplification == run.requests / run.calls


def test_the_outage_happened_and_was_retried(outage_result: outage.OutageResult) -> None:
    naive, admission = outage_result.runs
    assert naive.unsent == 0  # no breaker: every call sends
    for run in (naive, admission):
        assert run.statuses.get("503", 0) > 0
        assert run.requests > run.calls - run.unsent  # some call was retried
    # Naive retries resend every failure (503, 429, connection error) but a call's fifth.
    failures = naive.requests - naive.statuses.get("200", 0)
    assert naive.requests - naive.calls == failures - naive.failed


def test_the_budget_bounds_the_retries(outage_result: outage.OutageResult) -> None:
    admission = outage_result.runs[1]
    retries = admission.requests - (admission.calls - admission.unsent)
    # RetryBudget(ratio=0.2, min_per_second=2, window="5s"): at most 20 % of the calls,
    # plus 2/s over the windows the run spans.
    windows = admission.wall / 5.0 + 1
    assert retries <= 0.2 * admission.calls + 2 * 5 * windows


def test_the_provider_fails_requests_during_an_outage_only() -> None:
    async def scenario() -> None:
        limits = ProviderLimits(concurrency=50, rate=1000.0, burst=1000, latency=(0.001, 0.001))
        async with ProviderServer(limits) as server, httpx.AsyncClient(trust_env=False) as client:
            body = {"messages": [{"role": "user", "content": "hi"}]}

            async def statuses(n: int) -> list[int]:
                answers = [await client.post(server.url, json=body) for _ in range(n)]
                return [r.status_code for r in answers]

            assert set(await statuses(5)) == {200}
            await server.outage(1.0, 60.0)
            failed = await client.post(server.url, json=body)
            assert failed.status_code == 503
            assert "retry-after" not in failed.headers
            assert set(await statuses(4)) == {503}
            stats = await server.stats(reset=True)  # ends the outage
            assert (stats.ok, stats.unavailable) == (5, 5)
            assert set(await statuses(5)) == {200}
            await server.outage(0.3, 60.0)
            some = await statuses(60)
            assert 0 < some.count(503) < 60
            assert set(some) == {200, 503}
            with pytest.raises(ValueError, match="fraction"):
                await server.outage(1.5, 1.0)

    asyncio.run(scenario())


def test_cli_runs_the_retry_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        [
            *("demo", "--calls", "40", "--server-rate", "600", "--latency-ms", "5-15"),
            *("--no-progress", "--outage-seconds", "1"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Retries during an outage" in out
    assert "retry amplification" in out
    assert "adm.Retry + breaker + budget" in out
