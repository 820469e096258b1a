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
from admission.demo import llm
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
        ["demo", "--calls", "60", "--server-rate", "600", "--latency-ms", "5-15", "--no-progress"]
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
