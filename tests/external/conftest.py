"""Fixtures for the ported upstream suites (see ``external_support.py`` for the shared marks).

- ``anyio_backend``: each ``@pytest.mark.anyio`` test runs on asyncio, asyncio + uvloop and
  trio, as in ``tests/unit`` (anyio's pytest plugin runs the test function); a module narrows
  it by overriding the fixture (the CPython and aiolimiter ports run on asyncio only, the trio
  port on trio only).
"""

from __future__ import annotations

from typing import Any

import pytest
from external_support import UVLOOP


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        UVLOOP,
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param
