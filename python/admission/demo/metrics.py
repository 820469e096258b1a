"""A workload to watch in Prometheus and Grafana: ``python -m admission.demo.metrics``.

Tasks call a pretend LLM API and database through named limits (two semaphores, a token
bucket, a sliding window), some give up at a timeout, some are refused at once, and the
exporter serves it all on http://127.0.0.1:9464/metrics, where the Prometheus of the
repository's ``docker-compose.yml`` scrapes it. Utilization alerts are logged as they fire.
Runs until interrupted (Ctrl-C), or for ``--duration`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
from collections.abc import Sequence

import admission as adm

__all__ = ["main", "run"]


async def run(*, duration: float | None, port: int, addr: str, tasks: int, seed: int) -> int:
    rng = random.Random(seed)
    llm = adm.Semaphore(8, name="llm")
    db = adm.Semaphore(4, name="db")
    rpm = adm.TokenBucket(rate=30, per=1.0, burst=10, name="openai")
    window = adm.SlidingWindow(limit=20, window=1.0, name="anthropic")

    async def llm_call() -> None:
        async with rpm, llm:
            await asyncio.sleep(rng.uniform(0.05, 0.4))

    async def anthropic_call() -> None:
        try:
            await window.acquire(timeout=0.5)
        except adm.AcquireTimeout:
            return
        async with llm:
            await asyncio.sleep(rng.uniform(0.05, 0.3))

    async def db_query() -> None:
        try:
            await db.acquire(timeout=0.2)
        except adm.AcquireTimeout:
            return
        try:
            await asyncio.sleep(rng.uniform(0.01, 0.1))
        finally:
            db.release()

    async def worker() -> None:
        while True:
            roll = rng.random()
            if roll < 0.4:
                await llm_call()
            elif roll < 0.6:
                await anthropic_call()
            elif roll < 0.95:
                await db_query()
            elif rpm.try_acquire():  # opportunistic: refused when the bucket is empty
                pass
            await asyncio.sleep(rng.uniform(0.0, 0.05))

    with (
        adm.metrics.serve(port=port, addr=addr) as exporter,
        adm.alerts.on_utilization(0.8, interval=5.0, wait_bound=1.0),
    ):
        print(f"serving metrics on {exporter.url} (Ctrl-C to stop)", flush=True)
        workers = [asyncio.create_task(worker()) for _ in range(tasks)]
        try:
            await asyncio.sleep(duration if duration is not None else float("inf"))
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m admission.demo.metrics", description=__doc__)
    parser.add_argument("--port", type=int, default=9464, help="exporter port (default 9464)")
    parser.add_argument("--addr", default="127.0.0.1", help="exporter address (127.0.0.1)")
    parser.add_argument("--tasks", type=int, default=40, help="concurrent tasks (default 40)")
    parser.add_argument("--duration", type=float, default=None, help="seconds (default: forever)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        return asyncio.run(
            run(
                duration=args.duration,
                port=args.port,
                addr=args.addr,
                tasks=args.tasks,
                seed=args.seed,
            )
        )
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
