"""The tests' child processes (spawn start method): each started with a Pipe to talk over,
and every wait on one bounded (`BOUND`): a child that does not answer or end in time is
killed by its pid and the test fails."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["BOUND", "SPAWN", "join", "receive", "start"]

BOUND = 30.0  # every wait on a child ends within this many seconds
SPAWN = multiprocessing.get_context("spawn")


def start(target: Callable[..., None], *args: Any) -> tuple[Any, Connection]:
    """Runs ``target(*args, conn)`` in a new process; the process and our end of ``conn``."""
    ours, theirs = SPAWN.Pipe()
    process = SPAWN.Process(target=target, args=(*args, theirs))
    process.start()
    return process, ours


def receive(conn: Connection, process: Any) -> Any:
    """The next thing ``process`` sends."""
    import pytest  # not in the children, which import this module for `BOUND`

    if not conn.poll(BOUND):
        os.kill(process.pid, signal.SIGKILL)
        pytest.fail(f"worker {process.pid} sent nothing within {BOUND} s")
    return conn.recv()


def join(process: Any) -> None:
    """Waits for ``process`` to end, and for it to have ended well."""
    import pytest

    process.join(BOUND)
    if process.is_alive():
        os.kill(process.pid, signal.SIGKILL)
        process.join(BOUND)
        pytest.fail(f"worker {process.pid} did not finish within {BOUND} s")
    assert process.exitcode == 0, f"worker {process.pid} failed: exit code {process.exitcode}"
