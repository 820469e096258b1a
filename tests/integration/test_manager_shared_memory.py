"""A manager's limits in a shared-memory store (``[stores.NAME] kind = "shared_memory"``),
across real processes (spawn start method, bounded waits, kill by pid): processes that load
the same configuration file share one limit; the segment's configuration and the manager's
reloads agree."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_manager_shared_memory_workers import BOUND, hold_the_permit, wait_for_the_permit

import admission as adm

SPAWN = multiprocessing.get_context("spawn")


def write_config(path: Path, segment: str, rate: str = "3/min") -> Path:
    path.write_text(
        f'[stores.local]\nkind = "shared_memory"\nname = "{segment}"\ncapacity = 8\n\n'
        f'[limits.api]\nstore = "local"\nconcurrency = 1\nrate = "{rate}"\ntimeout = "30s"\n'
    )
    return path


@pytest.fixture
def segment() -> Iterator[str]:
    """A segment name of its own; removed at the end (with the `-v2` one a test may make)."""
    name = f"test-{uuid.uuid4().hex}"
    yield name
    for made in (name, f"{name}-v2"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"/dev/shm/admission.{made}")


def _stop(procs: list[Any]) -> None:
    for p in procs:
        p.join(BOUND)
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
            p.join(BOUND)
            pytest.fail(f"worker {p.pid} did not finish within {BOUND} s")
        assert p.exitcode == 0, f"worker {p.pid} failed: exit code {p.exitcode}"


def _receive(conn: Any) -> object:
    assert conn.poll(BOUND), "a worker said nothing within the bound"
    return conn.recv()


def test_two_processes_loading_one_file_share_one_limit(tmp_path: Path, segment: str) -> None:
    path = write_config(tmp_path / "admission.toml", segment)
    holder_conn, holder_end = SPAWN.Pipe()
    waiter_conn, waiter_end = SPAWN.Pipe()
    holder = SPAWN.Process(target=hold_the_permit, args=(str(path), holder_end))
    waiter = SPAWN.Process(target=wait_for_the_permit, args=(str(path), waiter_end))
    procs = [holder, waiter]
    try:
        holder.start()
        assert _receive(holder_conn) == "holding"
        # This process sees the other's permit, host-wide, through its own manager.
        manager = adm.ConcurrencyManager.from_file(path, env=False)
        assert manager.semaphore("api").in_use == 1
        waiter.start()
        assert _receive(waiter_conn) == "refused"  # the limit of 1 holds across processes
        holder_conn.send("let go")
        assert _receive(holder_conn) == "released"
        assert _receive(waiter_conn) == "admitted"
        _stop(procs)
    finally:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)  # type: ignore[arg-type]
                p.join(BOUND)
    stats = manager.stats()["api"]
    assert stats.concurrency.in_use == 0
    assert stats.concurrency.admitted == 2  # host-wide: the two workers' admissions
    assert stats.rate is not None
    assert stats.rate.admitted == 2
    # The rate of 3 a minute is shared too: one left for this process, then refused.
    with manager.limit("api", timeout=0):
        pass
    with pytest.raises(adm.AcquireTimeout), manager.limit("api", timeout=0):
        pass
    assert manager.semaphore("api").in_use == 0  # the refused request gave its permit back


def test_a_process_configured_otherwise_is_refused_by_the_segment(
    tmp_path: Path, segment: str
) -> None:
    adm.ConcurrencyManager.from_file(write_config(tmp_path / "a.toml", segment), env=False)
    other = write_config(tmp_path / "b.toml", segment, rate="4/min")
    with pytest.raises(adm.ConfigError) as info:
        adm.ConcurrencyManager.from_file(other, env=False)
    message = str(info.value)
    assert message.startswith(f"{other}: limits.api: ")
    assert "same configuration" in message
    assert "(the limit is in store 'local')" in message


def test_a_reload_changes_a_shared_rate_only_with_a_new_segment(
    tmp_path: Path, segment: str
) -> None:
    path = write_config(tmp_path / "admission.toml", segment)
    manager = adm.ConcurrencyManager.from_file(path, env=False)
    store, rate = manager.store("local"), manager.rate("api")
    write_config(path, segment, rate="4/min")
    with pytest.raises(adm.ConfigError, match=r"limits\.api\.rate: the limiter 'api\.rate'"):
        manager.reload()
    assert (manager.store("local"), manager.rate("api")) == (store, rate)
    write_config(path, f"{segment}-v2", rate="4/min")  # a new place, in the same reload
    manager.reload()
    new_store = manager.store("local")
    assert isinstance(new_store, adm.stores.SharedMemory)
    assert new_store.name == f"{segment}-v2"
    assert manager.rate("api").rate == 4.0
    with manager.limit("api", timeout=0):
        pass
    assert {s.name for s in new_store.limiters()} == {"api", "api.rate"}


@pytest.mark.anyio
async def test_the_async_admission_of_a_shared_limit_on_every_backend(
    tmp_path: Path, segment: str
) -> None:
    manager = adm.ConcurrencyManager.from_file(
        write_config(tmp_path / "admission.toml", segment, rate="60/min"), env=False
    )
    async with manager.limit("api"):
        assert manager.semaphore("api").in_use == 1
        with pytest.raises(adm.AcquireTimeout):
            async with manager.limit("api", timeout=0):
                pass
    assert manager.semaphore("api").in_use == 0
