"""Duration and rate strings: every accepted spelling, and a clear error for everything else."""

from __future__ import annotations

import math
import pickle

import pytest

import admission as adm
from admission.durations import Rate, parse_duration, parse_rate


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10.0),
        ("1m", 60.0),
        ("250ms", 0.25),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("2.s", 2.0),
        ("1m30s", 90.0),
        ("1h 30m", 5400.0),
        ("  2 h  ", 7200.0),
        ("100us", 0.0001),
        ("100µs", 0.0001),
        ("100μs", 0.0001),
        ("5ns", 5e-9),
        ("1d", 86400.0),
        ("2 minutes", 120.0),
        ("3 sec", 3.0),
        ("1 hour", 3600.0),
        ("1H", 3600.0),
        ("250MS", 0.25),
        ("10", 10.0),
        ("0.25", 0.25),
        ("0s", 0.0),
        (3, 3.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_durations(text: str | float, seconds: float) -> None:
    got = parse_duration(text)
    assert got == pytest.approx(seconds, rel=1e-12)
    assert type(got) is float


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "  ",
        "s",
        "10x",
        "ten",
        "ten seconds",
        "-1s",
        "-1",
        "1s 2",
        "1.2.3s",
        "10 s s",
        "1m-30s",
        "inf",
        "nan",
        "1e3s",
        "10mss",
        "1 month",
    ],
)
def test_bad_duration_strings_name_the_key_and_the_value(bad: str) -> None:
    with pytest.raises(adm.ConfigError) as info:
        parse_duration(bad, key="limits.rag.timeout")
    message = str(info.value)
    assert message.startswith("limits.rag.timeout: expected a duration such as")
    assert repr(bad) in message
    assert info.value.key == "limits.rag.timeout"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("bad", [-1, -0.5, math.nan, math.inf, -math.inf])
def test_bad_duration_numbers(bad: object) -> None:
    with pytest.raises(
        adm.ConfigError, match=r"^timeout: expected a finite number of seconds >= 0"
    ):
        parse_duration(bad, key="timeout")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [True, None, [1], {}])
def test_bad_duration_types(bad: object) -> None:
    with pytest.raises(adm.ConfigError, match=r"^timeout: expected a number of seconds, a dur"):
        parse_duration(bad, key="timeout")  # type: ignore[arg-type]


def test_duration_default_key() -> None:
    with pytest.raises(ValueError, match=r"^duration: expected .*got 'soon'$"):
        parse_duration("soon")


@pytest.mark.parametrize(
    ("value", "count", "per"),
    [
        ("60/min", 60, 60.0),
        ("50/m", 50, 60.0),
        ("10/s", 10, 1.0),
        ("1000/h", 1000, 3600.0),
        ("5/10s", 5, 10.0),
        ("2/day", 2, 86400.0),
        ("60 / min", 60, 60.0),
        ("60 per minute", 60, 60.0),
        ("60 PER MINUTE", 60, 60.0),
        ("1/1m30s", 1, 90.0),
        ("100/250ms", 100, 0.25),
        ("0.5/s", 0.5, 1.0),
        ("3/.5s", 3, 0.5),
        ("7", 7, 1.0),
        ("2.5", 2.5, 1.0),
        (10, 10, 1.0),
        (2.5, 2.5, 1.0),
        ((100, "1m"), 100, 60.0),
        ([3, 2], 3, 2.0),
        ((1.5, 0.5), 1.5, 0.5),
        (Rate(1, 2.0), 1, 2.0),
    ],
)
def test_rates(value: object, count: float, per: float) -> None:
    rate = parse_rate(value)  # type: ignore[arg-type]
    assert (rate.count, rate.per) == (count, per)
    assert type(rate.per) is float
    assert tuple(rate) == (count, per)  # unpacks as (count, per_seconds)


def test_integer_counts_stay_integers() -> None:
    assert type(parse_rate("60/min").count) is int
    assert type(parse_rate(5).count) is int
    assert type(parse_rate((5, 1)).count) is int
    assert type(parse_rate("0.5/s").count) is float


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "sixty/min",
        "60/",
        "/min",
        "60/x",
        "60/0s",
        "60/-1s",
        "0/min",
        "-1/s",
        "1/min/2",
        "60/min extra",
        "0",
        "per minute",
        0,
        -3,
        math.nan,
        math.inf,
        True,
        None,
        (1,),
        (1, 2, 3),
        (0, "1s"),
        (1, "0s"),
        (1, "soon"),
        ("x", "1s"),
        {"count": 1},
    ],
)
def test_bad_rates_name_the_key_and_the_value(bad: object) -> None:
    with pytest.raises(adm.ConfigError) as info:
        parse_rate(bad, key="limits.openai.rate")  # type: ignore[arg-type]
    assert str(info.value).startswith("limits.openai.rate: expected ")
    assert info.value.key == "limits.openai.rate"


def test_rate_errors_say_how_to_switch_a_rate_off() -> None:
    with pytest.raises(ValueError, match=r"use 'none' for no rate limit\), got '0/min'"):
        parse_rate("0/min")


@pytest.mark.parametrize(
    ("rate", "text"),
    [
        (Rate(60, 60.0), "60/min"),
        (Rate(5, 10.0), "5/10s"),
        (Rate(1, 3600.0), "1/h"),
        (Rate(3, 86400.0), "3/d"),
        (Rate(1.5, 1.0), "1.5/s"),
        (Rate(1, 90.0), "1/90s"),
        (Rate(1, 120.0), "1/2min"),
        (Rate(1, 0.25), "1/0.25s"),
        (Rate(60.0, 60.0), "60/min"),
    ],
)
def test_rate_text_round_trips(rate: Rate, text: str) -> None:
    assert str(rate) == text
    assert parse_rate(text) == rate


def test_rate_per_second_and_equality() -> None:
    assert parse_rate("1000/h").per_second == pytest.approx(1000 / 3600)
    assert parse_rate("60/min") == Rate(60, 60.0)
    assert hash(parse_rate("60/min")) == hash(Rate(60, 60.0))


def test_config_error_pickles_and_locates() -> None:
    err = adm.ConfigError("expected x, got 'y'", key="limits.a.rate")
    back = pickle.loads(pickle.dumps(err.at("admission.toml")))
    assert str(back) == "admission.toml: limits.a.rate: expected x, got 'y'"
    assert (back.problem, back.key, back.source) == (
        "expected x, got 'y'",
        "limits.a.rate",
        "admission.toml",
    )
    # A located error keeps its own location.
    assert err.at("a.toml").at("b.toml").source == "a.toml"
