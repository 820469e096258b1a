"""Runs one retry scenario on asyncio, trio or threads, on virtual time; imported, not fixtures.

A scenario is a `Retry` and a script of attempt outcomes (an exception to raise, or a value to
return). `Harness.run` calls a function that follows the script through the chosen API
(``decorator``, ``call`` / ``call_blocking``, or ``iterate``: ``for``/``async for attempt``),
and records the virtual time at which each attempt started and the call ended:

- ``asyncio``, ``trio``: an autojumping virtual clock (``VirtualRunner``); the retry reads the
  loop's clock and sleeps on the loop, as in production;
- ``uvloop``: asyncio on uvloop's loop, whose clock cannot be made virtual (it is C): the
  retry gets a `admission.testing.ManualClock` (``clock=``), whose waits advance it instead
  of sleeping, as in threads; the async APIs run on the real uvloop loop;
- ``threads``: the retry gets a `admission.testing.ManualClock` (``clock=``), whose waits
  advance it instead of sleeping; the call runs in a worker thread.

Nothing sleeps for real, and every figure is exact.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
from support import VirtualRunner

import admission as adm

KINDS = (
    "asyncio",
    "trio",
    *(("uvloop",) if importlib.util.find_spec("uvloop") is not None else ()),
    "threads",
)
_MANUAL = ("uvloop", "threads")  # the kinds whose retries run on a ManualClock
APIS = ("decorator", "call", "iterate")


@dataclass
class Run:
    """What one call did."""

    result: Any = None
    error: BaseException | None = None
    starts: list[float] = field(default_factory=list)
    """Virtual time at which each attempt started."""
    end: float = 0.0
    """Virtual time at which the call ended (it started at 0)."""

    @property
    def waits(self) -> list[float]:
        """The gaps between attempts (with ``duration=0``: the backoff waits)."""
        return [b - a for a, b in itertools.pairwise(self.starts)]


class Harness:
    """One of `KINDS`; makes retries for it and runs scripted calls through them."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.clock: adm.testing.ManualClock | None = None

    def __repr__(self) -> str:
        return f"Harness({self.kind!r})"

    def retry(self, **kwargs: Any) -> adm.Retry:
        """An `adm.Retry`; in threads on a fresh `ManualClock` (unless ``clock=`` is given)."""
        if self.kind in _MANUAL and "clock" not in kwargs:
            self.clock = adm.testing.ManualClock()
            kwargs["clock"] = self.clock
        return adm.Retry(**kwargs)

    def run(
        self,
        retry: adm.Retry,
        script: Iterable[Any],
        *,
        api: str = "call",
        duration: float = 0.0,
    ) -> Run:
        """Calls through ``retry`` a function whose n-th attempt takes ``duration`` seconds
        (virtual) and then raises or returns the n-th item of ``script`` (an exception
        instance or class is raised). Raises `AssertionError` if it runs past the script."""
        outcomes = iter(script)
        run = Run()
        if self.kind == "threads":
            clock = retry.clock if isinstance(retry.clock, adm.testing.ManualClock) else None
            assert clock is not None, "a threads retry needs a ManualClock (use Harness.retry)"
            origin = clock.now()

            def attempt() -> Any:
                run.starts.append(clock.now() - origin)
                clock.advance(duration)
                return _play(outcomes)

            def call() -> None:
                try:
                    run.result = _blocking(retry, attempt, api)
                except BaseException as exc:
                    run.error = exc
                run.end = clock.now() - origin

            worker = threading.Thread(target=call)
            worker.start()
            worker.join(timeout=30)
            assert not worker.is_alive(), "the call did not end within 30 s"
            return run
        if self.kind == "uvloop":
            manual = retry.clock if isinstance(retry.clock, adm.testing.ManualClock) else None
            assert manual is not None, "a uvloop retry needs a ManualClock (use Harness.retry)"
            start = manual.now()

            async def attempt_manual() -> Any:
                run.starts.append(manual.now() - start)
                manual.advance(duration)
                await asyncio.sleep(0)
                return _play(outcomes)

            async def on_uvloop() -> None:
                assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
                try:
                    run.result = await _async(retry, attempt_manual, api)
                except BaseException as exc:
                    run.error = exc
                run.end = manual.now() - start

            self.run_async(on_uvloop)
            return run

        async def attempt_async() -> Any:
            run.starts.append(anyio.current_time() - origin)
            if duration:
                await anyio.sleep(duration)
            return _play(outcomes)

        async def main() -> None:
            nonlocal origin
            origin = anyio.current_time()
            try:
                run.result = await _async(retry, attempt_async, api)
            except BaseException as exc:
                run.error = exc
            run.end = anyio.current_time() - origin

        origin = 0.0
        VirtualRunner(self.kind).run(main)
        return run

    def run_async(self, main: Any) -> Any:
        """Runs ``main()`` on this harness's loop (virtual time but on uvloop); not for
        ``threads``."""
        assert self.kind != "threads"
        if self.kind == "uvloop":
            import uvloop

            loop = uvloop.new_event_loop()
            try:
                return loop.run_until_complete(asyncio.wait_for(main(), timeout=30))
            finally:
                loop.close()
        return VirtualRunner(self.kind).run(main)


def _play(outcomes: Any) -> Any:
    try:
        outcome = next(outcomes)
    except StopIteration:
        raise AssertionError("an attempt past the end of the script") from None
    if isinstance(outcome, BaseException) or (
        isinstance(outcome, type) and issubclass(outcome, BaseException)
    ):
        raise outcome
    return outcome


def _blocking(retry: adm.Retry, fn: Any, api: str) -> Any:
    if api == "decorator":
        return retry(fn)()
    if api == "call":
        return retry.call_blocking(fn)
    for attempt in retry:
        with attempt:
            return fn()
    raise AssertionError("the loop ended without a successful attempt")


async def _async(retry: adm.Retry, fn: Any, api: str) -> Any:
    if api == "decorator":
        return await retry(fn)()
    if api == "call":
        return await retry.call(fn)
    async for attempt in retry:
        with attempt:
            return await fn()
    raise AssertionError("the loop ended without a successful attempt")
