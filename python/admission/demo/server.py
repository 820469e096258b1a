"""A local HTTP server that behaves like an LLM provider: its own limits, 429s beyond them.

Written on asyncio streams (no web framework), HTTP/1.1 with keep-alive, JSON bodies. It binds
127.0.0.1 only, on a free port. `ProviderServer` runs it in a child process
(``python -I .../admission/demo/server.py``), like a provider on another machine: the client can
neither slow it down nor share its CPU or GIL. The child takes commands on stdin (``stats``,
``reset``; end of input stops it) and answers one JSON line each on stdout.

The provider enforces, like a real one:

- at most ``concurrency`` requests in service at once;
- ``rate`` requests per second with bursts of up to ``burst`` (a token bucket of its own,
  deliberately not `admission`'s: the provider is someone else's code);
- beyond either, ``429 Too Many Requests`` with ``Retry-After``, after a few milliseconds
  (a gateway takes a moment to check a quota and say no);
- admitted requests take a seeded random latency, then answer ``200`` with a
  chat-completion-like JSON body;
- during an outage (the ``outage FRACTION SECONDS`` command, from then for that long) it
  fails that fraction of the requests, chosen at random (seeded), with ``503 Service
  Unavailable`` and no ``Retry-After``, as a struggling backend does.

It counts what it sees: requests in flight (received, not yet answered, 429s included),
requests in service, and open connections, each with its peak.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["HOST", "PATH", "ProviderLimits", "ProviderServer", "ServerStats", "main"]

HOST = "127.0.0.1"  # never anything else: the demo's traffic stays on this machine
PATH = "/v1/chat/completions"

_SCRIPT = str(Path(__file__).resolve())  # the child runs this file as a script
_MAX_HEAD = 64 * 1024
_MAX_BODY = 1024 * 1024
_REJECT_LATENCY = 0.005  # seconds a 429 takes (capped at the fastest admitted latency)
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    429: "Too Many Requests",
    503: "Service Unavailable",
    431: "Request Header Fields Too Large",
}


@dataclass(frozen=True)
class ProviderLimits:
    """What the provider allows, and how long it takes."""

    concurrency: int = 20
    rate: float = 200.0
    burst: int = 20
    latency: tuple[float, float] = (0.020, 0.060)  # seconds, uniform in [low, high]
    seed: int = 1


@dataclass(frozen=True)
class ServerStats:
    """What the provider saw since it started (or since the last reset)."""

    requests: int
    ok: int
    rejected: int
    rejected_concurrency: int
    rejected_rate: int
    bad_requests: int
    in_flight: int
    peak_in_flight: int
    in_service: int
    peak_in_service: int
    open_connections: int
    peak_connections: int
    connections: int
    unavailable: int = 0  # 503s answered during an outage


class _Bucket:
    """The provider's own token bucket (continuous refill, starts full)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def take(self) -> float:
        """Takes a token: 0.0 if admitted, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def refill(self) -> None:
        self.tokens = self.burst
        self.stamp = time.monotonic()


class _Counters:
    def __init__(self) -> None:
        self.requests = 0
        self.ok = 0
        self.rejected_concurrency = 0
        self.rejected_rate = 0
        self.bad_requests = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.in_service = 0
        self.peak_in_service = 0
        self.open_connections = 0
        self.peak_connections = 0
        self.connections = 0
        self.unavailable = 0

    def snapshot(self) -> ServerStats:
        return ServerStats(
            requests=self.requests,
            ok=self.ok,
            rejected=self.rejected_concurrency + self.rejected_rate,
            rejected_concurrency=self.rejected_concurrency,
            rejected_rate=self.rejected_rate,
            bad_requests=self.bad_requests,
            in_flight=self.in_flight,
            peak_in_flight=self.peak_in_flight,
            in_service=self.in_service,
            peak_in_service=self.peak_in_service,
            open_connections=self.open_connections,
            peak_connections=self.peak_connections,
            connections=self.connections,
            unavailable=self.unavailable,
        )

    def reset(self) -> None:
        """Zeroes the counters; peaks restart from the current gauges."""
        self.requests = self.ok = self.bad_requests = self.connections = 0
        self.rejected_concurrency = self.rejected_rate = self.unavailable = 0
        self.peak_in_flight = self.in_flight
        self.peak_in_service = self.in_service
        self.peak_connections = self.open_connections


class _Provider:
    """The server itself (runs in the child process)."""

    def __init__(self, limits: ProviderLimits) -> None:
        self.limits = limits
        self.counters = _Counters()
        self._bucket = _Bucket(limits.rate, limits.burst)
        self._rng = random.Random(limits.seed)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._outage_until = 0.0  # time.monotonic() at which the outage ends
        self._outage_fraction = 0.0
        self._outage_rng = random.Random(limits.seed)

    def outage(self, fraction: float, seconds: float) -> None:
        """From now on for ``seconds``, fails ``fraction`` of the requests with 503."""
        self._outage_fraction = fraction
        self._outage_until = time.monotonic() + seconds

    def reset(self) -> ServerStats:
        """A snapshot, then a new count: a full bucket, the latency sequence from the seed."""
        stats = self.counters.snapshot()
        self.counters.reset()
        self._bucket.refill()
        self._rng.seed(self.limits.seed)
        self._outage_rng.seed(self.limits.seed)
        self._outage_until = 0.0
        return stats

    async def serve(self, ready: asyncio.Future[int], stop: asyncio.Event, backlog: int) -> None:
        server = await asyncio.start_server(
            self._connection, HOST, 0, backlog=backlog, limit=_MAX_HEAD
        )
        try:
            ready.set_result(server.sockets[0].getsockname()[1])
            await stop.wait()
        finally:
            self._closing = True
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        c = self.counters
        c.connections += 1
        c.open_connections += 1
        c.peak_connections = max(c.peak_connections, c.open_connections)
        try:
            while await self._exchange(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away mid-request
        except asyncio.CancelledError:
            if not self._closing:
                raise
            # Shutting down: end quietly (a cancelled connection task is logged by asyncio).
        finally:
            c.open_connections -= 1
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serves one request; returns whether the connection stays open."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False  # closed between requests: the normal end of keep-alive
        except asyncio.LimitOverrunError:
            await self._respond(writer, 431, {"error": {"message": "headers too large"}}, False)
            return False
        try:
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, version = request_line.split(" ")
            headers: dict[str, str] = {}
            for line in header_lines:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if not 0 <= length <= _MAX_BODY:
                raise ValueError(f"content-length {length}")
        except ValueError:
            self.counters.bad_requests += 1
            await self._respond(writer, 400, {"error": {"message": "malformed request"}}, False)
            return False
        body = await reader.readexactly(length) if length else b""
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        status, payload, extra = await self._handle(method, target, body)
        await self._respond(writer, status, payload, keep_alive, extra)
        return keep_alive

    async def _handle(
        self, method: str, target: str, body: bytes
    ) -> tuple[int, object, dict[str, str]]:
        """The provider's decision and work. Counted in flight until it returns."""
        c = self.counters
        c.requests += 1
        c.in_flight += 1
        c.peak_in_flight = max(c.peak_in_flight, c.in_flight)
        try:
            if target.split("?", 1)[0] != PATH:
                c.bad_requests += 1
                return 404, {"error": {"message": f"no route {target}"}}, {}
            if method != "POST":
                c.bad_requests += 1
                return 405, {"error": {"message": "use POST"}}, {"Allow": "POST"}
            try:
                request = json.loads(body)
                prompt = " ".join(str(m["content"]) for m in request["messages"])
                model = str(request.get("model", "demo-1"))
            except (ValueError, KeyError, TypeError, AttributeError):
                c.bad_requests += 1
                return 400, {"error": {"message": "expected {'messages': [...]}"}}, {}

            limits = self.limits
            if c.in_service >= limits.concurrency:
                c.rejected_concurrency += 1
                return await self._reject(
                    f"at most {limits.concurrency} requests at once", 1.0, "concurrency"
                )
            wait = self._bucket.take()
            if wait > 0:
                c.rejected_rate += 1
                return await self._reject(f"at most {limits.rate:g} requests/s", wait, "rate")

            # Past the gateway's quota (the request counts against the rate), the backend
            # may be failing.
            if (
                time.monotonic() < self._outage_until
                and self._outage_rng.random() < self._outage_fraction
            ):
                c.unavailable += 1
                await asyncio.sleep(min(_REJECT_LATENCY, limits.latency[0]))
                return 503, {"error": {"type": "overloaded", "message": "Service Unavailable"}}, {}
            c.in_service += 1
            c.peak_in_service = max(c.peak_in_service, c.in_service)
            try:
                await asyncio.sleep(self._rng.uniform(*limits.latency))
            finally:
                c.in_service -= 1
            c.ok += 1
            prompt_tokens = max(1, len(prompt) // 4)
            answer = {
                "id": f"chatcmpl-{c.requests}",
                "object": "chat.completion",
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Admitted, and answered."},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": 5,
                    "total_tokens": prompt_tokens + 5,
                },
            }
            return 200, answer, {}
        finally:
            c.in_flight -= 1

    async def _reject(
        self, why: str, retry_after: float, limit: str
    ) -> tuple[int, object, dict[str, str]]:
        await asyncio.sleep(min(_REJECT_LATENCY, self.limits.latency[0]))
        payload = {
            "error": {
                "type": "rate_limit_exceeded",
                "message": f"Rate limit reached: {why}. Please retry after a short wait.",
            }
        }
        headers = {
            "Retry-After": str(max(1, math.ceil(retry_after))),
            "retry-after-ms": str(max(1, math.ceil(retry_after * 1000))),
            "x-ratelimit-limit": limit,
        }
        return 429, payload, headers

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        payload: object,
        keep_alive: bool,
        extra: dict[str, str] | None = None,
    ) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
        ]
        lines.extend(f"{name}: {value}" for name, value in (extra or {}).items())
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()


# the child process ------------------------------------------------------------------------


def _reply(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _child(limits: ProviderLimits, backlog: int) -> None:
    loop = asyncio.get_running_loop()
    provider = _Provider(limits)
    stop = asyncio.Event()
    ready: asyncio.Future[int] = loop.create_future()
    serving = asyncio.ensure_future(provider.serve(ready, stop, backlog))
    try:
        started: list[asyncio.Future[Any]] = [ready, serving]
        await asyncio.wait(started, return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            serving.result()  # failed to start: raise why
        _reply({"port": ready.result()})
        commands = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(commands), sys.stdin
        )
        try:
            while line := await commands.readline():
                command = line.decode().strip()
                if command == "stats":
                    _reply(dataclasses.asdict(provider.counters.snapshot()))
                elif command == "reset":
                    _reply(dataclasses.asdict(provider.reset()))
                elif command.startswith("outage "):
                    fraction, seconds = map(float, command.split()[1:3])
                    provider.outage(fraction, seconds)
                    _reply({"outage": [fraction, seconds]})
                else:
                    _reply({"error": f"unknown command {command!r}"})
        finally:
            transport.close()
    finally:
        stop.set()  # end of input: the parent is done (or gone)
        await serving


def _latency(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    return float(low) / 1000, float(high or low) / 1000


def main(argv: Sequence[str] | None = None) -> int:
    """The child: ``python -I server.py [options]`` (see `ProviderServer`)."""
    parser = argparse.ArgumentParser(
        prog="server.py",
        description="An LLM-provider-like HTTP server on 127.0.0.1 (driven over stdin).",
    )
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--burst", type=int, default=20)
    parser.add_argument("--latency-ms", type=_latency, default=(0.020, 0.060))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--backlog", type=int, default=1024)
    args = parser.parse_args(argv)
    limits = ProviderLimits(args.concurrency, args.rate, args.burst, args.latency_ms, args.seed)
    try:
        asyncio.run(_child(limits, max(100, min(args.backlog, 65535))))
    except KeyboardInterrupt:
        return 130  # Ctrl-C reaches the whole process group: the parent reports it
    return 0


# the parent's handle ----------------------------------------------------------------------


class ProviderServer:
    """The provider, started in a child process; use it with ``async with``.

    >>> async with ProviderServer(ProviderLimits()) as server:  # doctest: +SKIP
    ...     server.url                 # 'http://127.0.0.1:PORT/v1/chat/completions'
    ...     await server.stats()       # ServerStats(...)
    """

    def __init__(self, limits: ProviderLimits, *, backlog: int = 1024) -> None:
        self.limits = limits
        self._backlog = backlog
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._port = 0

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """The chat-completions endpoint."""
        return f"http://{HOST}:{self._port}{PATH}"

    async def start(self) -> None:
        """Starts the child and waits until it listens."""
        if self._process is not None:
            raise RuntimeError("the server is already started")
        limits = self.limits
        low, high = limits.latency
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",  # isolated: this file needs the standard library only, and starts fast
            _SCRIPT,
            f"--concurrency={limits.concurrency}",
            f"--rate={limits.rate!r}",
            f"--burst={limits.burst}",
            f"--latency-ms={low * 1000!r}-{high * 1000!r}",
            f"--seed={limits.seed}",
            f"--backlog={self._backlog}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            hello = await self._read()
            self._port = int(hello["port"])
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Ends the child's input (it closes every connection and exits), and reaps it."""
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), timeout=10.0)
        except BaseException:
            if process.returncode is None:
                process.kill()
            await process.wait()
            raise

    async def __aenter__(self) -> ProviderServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def stats(self, *, reset: bool = False) -> ServerStats:
        """What the provider saw since it started or since the last reset. With ``reset``,
        a new count starts after this snapshot (peaks restart from the current gauges, the
        rate bucket refills, the latency sequence restarts from the seed)."""
        process = self._process
        if process is None or process.stdin is None:
            raise RuntimeError("the server is not running")
        async with self._lock:
            process.stdin.write(b"reset\n" if reset else b"stats\n")
            await process.stdin.drain()
            return ServerStats(**await self._read())

    async def outage(self, fraction: float, seconds: float) -> None:
        """From now on for ``seconds``, the provider fails ``fraction`` of the requests with
        ``503 Service Unavailable`` (chosen at random, from the seed). `stats` with ``reset``
        ends an outage."""
        if not (0.0 <= fraction <= 1.0 and 0.0 <= seconds < float("inf")):
            raise ValueError(
                f"expected a fraction in [0, 1] and seconds >= 0, got {fraction!r}, {seconds!r}"
            )
        process = self._process
        if process is None or process.stdin is None:
            raise RuntimeError("the server is not running")
        async with self._lock:
            process.stdin.write(f"outage {fraction!r} {seconds!r}\n".encode())
            await process.stdin.drain()
            await self._read()

    async def _read(self) -> Any:
        process = self._process
        assert process is not None
        assert process.stdout is not None
        line = await process.stdout.readline()
        if not line:
            code = await process.wait()
            raise RuntimeError(f"the provider server exited (status {code})")
        return json.loads(line)


if __name__ == "__main__":
    raise SystemExit(main())
