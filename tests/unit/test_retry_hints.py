"""Server hints a retry honours (`admission._hints`): ``retry_after`` attributes, headers."""

from __future__ import annotations

import datetime
from typing import Any

import httpx
import pytest

from admission._hints import parse_header, retry_after

WALL = 1_445_412_470.0  # Wed, 21 Oct 2015 07:27:50 GMT


class Obj:
    def __init__(self, **attrs: Any) -> None:
        self.__dict__.update(attrs)


@pytest.mark.parametrize(
    ("hint", "seconds"),
    [
        (3, 3.0),
        (0.25, 0.25),
        (0, 0.0),
        (datetime.timedelta(milliseconds=1500), 1.5),
        ("7", 7.0),
        (b"2", 2.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 10.0),
        (-1, None),
        (float("nan"), None),
        (float("inf"), None),
        (True, None),
        ("later", None),
        (object(), None),
    ],
)
def test_retry_after_attribute(hint: object, seconds: float | None) -> None:
    assert retry_after(Obj(retry_after=hint), wall=lambda: WALL) == seconds


def test_a_method_named_retry_after_is_not_a_hint() -> None:
    class Client(Exception):
        def retry_after(self) -> float:
            return 5.0

    assert retry_after(Client()) is None


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"Retry-After-Ms": "20"}, 0.02),
        ({"retry-after-ms": "-5", "retry-after": "2"}, 2.0),  # a bad ms falls back
        ({"retry-after-ms": "soon", "retry-after": "2"}, 2.0),
        ({"Retry-After": "120"}, 120.0),
        ({"retry-after": " 3 "}, 3.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 10.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:00:00 GMT"}, 0.0),  # a date past: now
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 -0000"}, 10.0),
        ({"Retry-After": "tomorrow"}, None),
        ({"Retry-After": ""}, None),
        ({"Retry-After": "-10"}, None),
        ({}, None),
    ],
)
def test_headers(headers: dict[str, str], seconds: float | None) -> None:
    as_response = Obj(headers=headers)
    as_error = Obj(response=Obj(headers=headers))
    assert retry_after(as_response, wall=lambda: WALL) == seconds
    assert retry_after(as_error, wall=lambda: WALL) == seconds


def test_httpx_objects() -> None:
    request = httpx.Request("GET", "https://api.example/")
    response = httpx.Response(429, headers={"Retry-After": "4"}, request=request)
    error = httpx.HTTPStatusError("429", request=request, response=response)
    assert retry_after(error) == 4.0
    assert retry_after(response) == 4.0
    assert retry_after(httpx.Response(200, request=request)) is None
    # httpx.RequestError built without a request raises on `.request`; `.response` is
    # absent: no hint, no error.
    assert retry_after(httpx.ConnectError("refused")) is None


def test_a_raising_property_is_no_hint() -> None:
    class Broken(Exception):
        @property
        def response(self) -> Any:
            raise RuntimeError("no response")

    assert retry_after(Broken()) is None


def test_parse_header_bytes_and_dates() -> None:
    assert parse_header(b"1.5") == 1.5
    assert parse_header("Wed, 21 Oct 2015 07:28:30 GMT", wall=lambda: WALL) == 40.0
    assert parse_header("32 Foo 2015") is None
