"""Fixtures of the integration tests: ``pg``, one PostgreSQL server per test module, and
``redis_server``, one Redis server per test module.

A module that needs a differently set up server (test_pool_ssl.py) defines its own ``pg``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from postgres import PostgresServer
from redis_server import RedisServer


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server
