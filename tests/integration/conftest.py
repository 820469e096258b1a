"""Fixtures of the integration tests: ``pg``, one PostgreSQL server per test module.

A module that needs a differently set up server (test_pool_ssl.py) defines its own ``pg``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from postgres import PostgresServer


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server
