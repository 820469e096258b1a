"""The fan-out rules in test files: only a count written large is evidence of size
(`test-fan-out-evidence = "count"`, the default), and "data" gives the reading of library
code back."""

from __future__ import annotations

import pytest
from fixture_cases import FIXTURES, load

from admission.audit import Settings, audit_source
from admission.audit.config import AuditConfigError, settings_from_table

FAN_OUT = ("ADM101", "ADM102")


def _fan_out_lines(source: str, path: str, settings: Settings | None = None) -> set[int]:
    findings, failures = audit_source(source, path, settings, relative_path=path)
    assert failures == []
    return {f.line for f in findings if f.code in FAN_OUT}


def _good_cases_reported(source: str, path: str, settings: Settings) -> dict[str, bool]:
    fixture = load(FIXTURES / "adm101_in_tests.py")
    lines = _fan_out_lines(source, path, settings)
    return {
        name: any(first <= line <= last for line in lines)
        for name, first, last in fixture.good_ranges
    }


def test_the_good_cases_in_tests_fire_with_the_data_reading() -> None:
    # what keeps each good case out is the test-file reading alone: with "data" every one of
    # them but the small range is reported, as it would be in library code
    fixture = load(FIXTURES / "adm101_in_tests.py")
    path = fixture.relative_path
    assert path.startswith("tests/")
    expected = {
        name: name != "good_gather_over_a_small_range" for name, _, _ in fixture.good_ranges
    }
    assert len(expected) >= 8
    data = Settings(test_fan_out_evidence="data")
    assert _good_cases_reported(fixture.source, path, data) == expected
    assert _good_cases_reported(fixture.source, "myapp/jobs.py", Settings()) == expected
    assert not any(_good_cases_reported(fixture.source, path, Settings()).values())


def test_the_bad_cases_but_a_named_count_fire_in_library_code_too() -> None:
    fixture = load(FIXTURES / "adm101_in_tests.py")
    bad = {line for line, code in fixture.expected if code in FAN_OUT}
    # but `range(REQUESTS)`: in library code a named count is a setting (`range(workers)`)
    named = {n for n, text in enumerate(fixture.source.splitlines(), 1) if "(REQUESTS)" in text}
    assert len(named) == 1
    lines = _fan_out_lines(fixture.source, "myapp/jobs.py")
    assert bad - named <= lines
    assert not named & lines


@pytest.mark.parametrize(
    "loop",
    [
        "for i in range(101)",
        "for i in range(-5, 200)",
        "for i, _ in enumerate(range(400))",
        "for _ in [*range(300)]",
        "for _ in list(range(300)) + [0]",
        "for i in range(10 ** 3)",
        "for i in range(2 * 60)",
        "for i in range(10 ** 30)",  # larger than `len(range(...))` can count
    ],
)
def test_counts_above_the_small_range_limit_are_evidence(loop: str) -> None:
    source = f"import asyncio\nasync def t(f):\n    {loop}:\n        asyncio.create_task(f())\n"
    assert _fan_out_lines(source, "tests/test_load.py") == {4}


_NOT_A_COUNT = (
    "import asyncio\nfrom x import N, stream\nLIMIT = 10\nLIMIT = 1000\n"
    "async def t(f, rows):\n    {loop}:\n        asyncio.create_task(f())\n"
)


@pytest.mark.parametrize(
    "loop",
    [
        "for i in range(100)",
        "for i in range(0, 1000, 100)",
        "for i in range(N)",  # a count the test does not write
        "for i in range(LIMIT)",  # bound twice: not one count
        "for i in range(10 ** 2)",  # 100: not above the small-range limit
    ],
)
def test_small_or_unwritten_counts_are_not_evidence(loop: str) -> None:
    assert _fan_out_lines(_NOT_A_COUNT.format(loop=loop), "tests/test_load.py") == set()


@pytest.mark.parametrize("loop", ["for row in rows", "async for row in stream()"])
def test_the_tests_own_data_is_not_evidence(loop: str) -> None:
    source = _NOT_A_COUNT.format(loop=loop)
    assert _fan_out_lines(source, "tests/test_load.py") == set()
    data = Settings(test_fan_out_evidence="data")
    assert _fan_out_lines(source, "tests/test_load.py", data) == {7}
    assert _fan_out_lines(source, "app/load.py") == {7}


def test_a_bad_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="test_fan_out_evidence"):
        Settings(test_fan_out_evidence="some")
    with pytest.raises(AuditConfigError, match="test-fan-out-evidence"):
        settings_from_table({"test-fan-out-evidence": "all"}, "pyproject.toml", FIXTURES)


def test_the_setting_is_read_from_the_table() -> None:
    table = {"test-fan-out-evidence": "data"}
    assert settings_from_table(table, "pyproject.toml", FIXTURES).test_fan_out_evidence == "data"


def test_a_named_huge_count_does_not_crash() -> None:
    source = (
        "import asyncio\nN = 10**27\n"
        "async def t(f):\n    await asyncio.gather(*[f(i) for i in range(N)])\n"
    )
    assert _fan_out_lines(source, "tests/test_load.py") == {4}


def test_the_count_reading_leaves_other_rules_as_they_are() -> None:
    # ADM301 reads a named count as a setting in tests too: the count reading is the fan-out
    # rules' alone
    source = (
        "import httpx\nCLIENTS = 500\ndef test_many_clients():\n"
        "    for i in range(CLIENTS):\n        client = httpx.Client()\n"
    )
    for path in ("tests/test_clients.py", "app/clients.py"):
        findings, _ = audit_source(source, path, relative_path=path)
        assert [f.code for f in findings] == [], path
