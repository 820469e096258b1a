"""An LLM provider on 127.0.0.1 for the client layer's tests (issue 15), in a child process.

It enforces what a real provider does, and says so in the real providers' headers:

- ``rpm`` requests and ``tpm`` tokens per ``period`` seconds (OpenAI's quotas are per minute;
  a test's period is a second), each a bucket of that capacity refilled continuously and
  starting full, as OpenAI's; tokens are charged at arrival at what the request will really
  use (its prompt's ``len/4`` plus the completion it will get, at most ``max_tokens``);
- at most ``concurrency`` requests in service;
- beyond any of them a 429 with ``Retry-After`` / ``retry-after-ms`` (when the next unit is
  due; ``--whole-seconds``: ``Retry-After`` alone, at least 1 s); on every response
  ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` (resets as ``1.5s``, ``6m0s``)
  or, with ``--vendor anthropic``, ``anthropic-ratelimit-*`` (RFC 3339 resets);
- a seeded ``fail_rate`` of admitted requests answers 503 (no tokens charged);
- ``"stream": true`` answers server-sent events, usage in the last event (``--no-usage``:
  no usage anywhere, as a provider that does not say).

It counts what it received and answers ``stats`` (one JSON line) on stdin; end of input
stops it. Standard library only: it runs as ``python -I llm_provider.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import random
import sys
import time
from typing import Any

_MAX_BODY = 1 << 20


class Bucket:
    """``limit`` per ``period`` seconds, capacity ``limit``, starts full."""

    def __init__(self, limit: float, period: float) -> None:
        self.limit = limit
        self.rate = limit / period
        self.level = limit
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.limit, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, n: float) -> float:
        """0.0 if taken, else seconds until ``n`` is there (nothing taken)."""
        self._refill()
        if self.level >= n:
            self.level -= n
            return 0.0
        return (n - self.level) / self.rate

    def give(self, n: float) -> None:
        self._refill()
        self.level = min(self.limit, self.level + n)

    def remaining(self) -> int:
        self._refill()
        return max(0, math.floor(self.level))

    def reset_after(self) -> float:
        self._refill()
        return (self.limit - self.level) / self.rate


def go_duration(seconds: float) -> str:
    """OpenAI's reset format: ``6m0s``, ``1.5s``, ``20ms``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


class Provider:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.requests = Bucket(args.rpm, args.period)
        self.tokens = Bucket(args.tpm, args.period)
        self.rng = random.Random(args.seed)
        self.in_service = 0
        self.c: dict[str, Any] = {
            "received": 0,
            "ok": 0,
            "rate_limited": 0,
            "limited_by": {"requests": 0, "tokens": 0, "concurrency": 0},
            "unavailable": 0,
            "bad": 0,
            "tokens_used": 0,
            "peak_in_service": 0,
            "first_ok": None,
            "last_ok": None,
            "streams": 0,
        }

    def headers(self) -> dict[str, str]:
        r, t = self.requests, self.tokens
        if self.args.vendor == "anthropic":
            wall = time.time()

            def at(seconds: float) -> str:
                when = datetime.datetime.fromtimestamp(wall + seconds, datetime.timezone.utc)
                return when.isoformat().replace("+00:00", "Z")

            return {
                "anthropic-ratelimit-requests-limit": str(int(r.limit)),
                "anthropic-ratelimit-requests-remaining": str(r.remaining()),
                "anthropic-ratelimit-requests-reset": at(r.reset_after()),
                "anthropic-ratelimit-tokens-limit": str(int(t.limit)),
                "anthropic-ratelimit-tokens-remaining": str(t.remaining()),
                "anthropic-ratelimit-tokens-reset": at(t.reset_after()),
            }
        return {
            "x-ratelimit-limit-requests": str(int(r.limit)),
            "x-ratelimit-remaining-requests": str(r.remaining()),
            "x-ratelimit-reset-requests": go_duration(r.reset_after()),
            "x-ratelimit-limit-tokens": str(int(t.limit)),
            "x-ratelimit-remaining-tokens": str(t.remaining()),
            "x-ratelimit-reset-tokens": go_duration(t.reset_after()),
        }

    def limited(self, why: str, wait: float) -> tuple[int, Any, dict[str, str]]:
        self.c["rate_limited"] += 1
        self.c["limited_by"][why] += 1
        headers = self.headers()
        headers["retry-after"] = str(max(1, math.ceil(wait)))
        if not self.args.whole_seconds:
            headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
        return 429, {"error": {"type": "rate_limit_exceeded", "message": why}}, headers

    async def handle(self, body: bytes) -> tuple[int, Any, dict[str, str]]:
        c = self.c
        c["received"] += 1
        try:
            request = json.loads(body)
            messages = request["messages"]
            prompt = sum(len(str(m.get("content", ""))) for m in messages)
            max_tokens = int(request.get("max_tokens", 256))
        except (ValueError, KeyError, TypeError, AttributeError):
            c["bad"] += 1
            return 400, {"error": {"message": "bad request"}}, {}
        prompt_tokens = math.ceil(prompt / 4)
        completion = min(max_tokens, self.rng.randint(*self.args.completion))
        used = prompt_tokens + completion
        if self.in_service >= self.args.concurrency:
            return self.limited("concurrency", 1.0)
        wait = self.requests.take(1)
        if wait:
            return self.limited("requests", wait)
        wait = self.tokens.take(used)
        if wait:
            self.requests.give(1)  # refused: the request is not counted either
            return self.limited("tokens", wait)
        self.in_service += 1
        c["peak_in_service"] = max(c["peak_in_service"], self.in_service)
        try:
            await asyncio.sleep(self.rng.uniform(*self.args.latency))
        finally:
            self.in_service -= 1
        if self.rng.random() < self.args.fail_rate:
            self.tokens.give(used)
            c["unavailable"] += 1
            return 503, {"error": {"message": "overloaded"}}, self.headers()
        c["ok"] += 1
        c["tokens_used"] += used
        now = time.monotonic()
        c["first_ok"] = now if c["first_ok"] is None else c["first_ok"]
        c["last_ok"] = now
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": used,
        }
        if self.args.no_usage:
            usage = {}  # (a provider that does not say: the client's estimate stands)
        if request.get("stream"):
            c["streams"] += 1
            chunks = [
                {"choices": [{"index": 0, "delta": {"content": "word "}}]} for _ in range(3)
            ] + [{"choices": [], **({"usage": usage} if usage else {})}]
            return 200, chunks, self.headers()
        answer = {
            "id": f"chatcmpl-{c['received']}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(request.get("model", "test-1")),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
        if not usage:
            del answer["usage"]
        return 200, answer, self.headers()

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = min(int(headers.get("content-length", "0")), _MAX_BODY)
                body = await reader.readexactly(length) if length else b""
                status, payload, extra = await self.handle(body)
                if isinstance(payload, list):  # server-sent events
                    data = "".join(f"data: {json.dumps(e)}\n\n" for e in payload)
                    data += "data: [DONE]\n\n"
                    raw = data.encode()
                    kind = "text/event-stream"
                else:
                    raw = json.dumps(payload).encode()
                    kind = "application/json"
                out = [
                    f"HTTP/1.1 {status} X",
                    f"Content-Type: {kind}",
                    f"Content-Length: {len(raw)}",
                ]
                out += [f"{k}: {v}" for k, v in extra.items()]
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + raw)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _main(args: argparse.Namespace) -> None:
    provider = Provider(args)
    server = await asyncio.start_server(provider.connection, "127.0.0.1", 0, backlog=2048)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": port}), flush=True)
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    while line := await commands.readline():
        if line.strip() == b"stats":
            print(json.dumps(provider.c), flush=True)
    server.close()


def _pair(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    return float(low), float(high or low)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rpm", type=float, required=True)
    parser.add_argument("--tpm", type=float, required=True)
    parser.add_argument("--period", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--latency", type=_pair, default=(0.02, 0.06))
    parser.add_argument(
        "--completion", type=lambda t: tuple(map(int, t.split("-"))), default=(10, 40)
    )
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--vendor", choices=("openai", "anthropic"), default="openai")
    # Retry-After in whole seconds only (no retry-after-ms): a pause of the whole account.
    parser.add_argument("--whole-seconds", action="store_true")
    # Answers without ``usage`` (the tokens are charged all the same).
    parser.add_argument("--no-usage", action="store_true")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
