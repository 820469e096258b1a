"""The worker processes of test_manager_shared_memory.py: a module of its own, light to
import, because the spawn start method imports it in every worker."""

from __future__ import annotations

import asyncio
from multiprocessing.connection import Connection

import admission as adm

BOUND = 30.0  # every wait of these tests ends within this many seconds


def hold_the_permit(path: str, out: Connection) -> None:
    """Loads the file, holds the limit's one permit (a thread's `with`) until told to let go."""
    manager = adm.ConcurrencyManager.from_file(path, env=False)
    with manager.limit("api", timeout=BOUND):
        out.send("holding")
        if out.poll(BOUND):
            out.recv()
    out.send("released")


def wait_for_the_permit(path: str, out: Connection) -> None:
    """Loads the file; refused at once while the other process holds the permit, then waits
    for it (an asyncio task's `async with`)."""
    manager = adm.ConcurrencyManager.from_file(path, env=False)

    async def main() -> None:
        try:
            async with manager.limit("api", timeout=0):
                out.send("admitted at once")
                return
        except adm.AcquireTimeout:
            out.send("refused")
        async with manager.limit("api", timeout=BOUND):
            out.send("admitted")

    asyncio.run(main())
