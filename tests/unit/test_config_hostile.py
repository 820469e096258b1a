"""Issue 12 case 11: hostile values are `ConfigError`s that name the key and the source."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import admission as adm
from admission.config import Config
from admission.durations import parse_duration, parse_rate

pytestmark = pytest.mark.usefixtures("no_admission_variables")

MANY_DIGITS = "1" * 5000
ARABIC_TEN = "\u0661\u0660"  # Arabic-Indic digits one, zero


@pytest.mark.parametrize("value", ["²", ARABIC_TEN, MANY_DIGITS, "1" * 400])
def test_env_counts_that_int_refuses(value: str) -> None:
    with pytest.raises(adm.ConfigError) as info:
        Config.from_dict({"limits": {"x": {}}}, env={"ADMISSION_X_CONCURRENCY": value})
    message = str(info.value)
    assert "environment variable ADMISSION_X_CONCURRENCY" in message
    assert "limits.x.concurrency" in message


@pytest.mark.parametrize(
    "value", ["²", MANY_DIGITS, ARABIC_TEN + "s", "30m1h", "1s1s1s", "1" * 400]
)
def test_env_timeouts(value: str) -> None:
    with pytest.raises(adm.ConfigError) as info:
        Config.from_dict({"limits": {"x": {}}}, env={"ADMISSION_X_TIMEOUT": value})
    assert "environment variable ADMISSION_X_TIMEOUT: limits.x.timeout" in str(info.value)


@pytest.mark.parametrize(
    "value", [MANY_DIGITS + "/s", "1" * 400 + "/s", ARABIC_TEN + "/s", "5/1h1h"]
)
def test_env_rates(value: str) -> None:
    with pytest.raises(adm.ConfigError) as info:
        Config.from_dict({"limits": {"x": {}}}, env={"ADMISSION_X_RATE": value})
    assert "environment variable ADMISSION_X_RATE: limits.x.rate" in str(info.value)


@pytest.mark.parametrize(
    "text", ["1" * 400, "1" * 400 + "s", ARABIC_TEN + "s", "30m1h", "1s1s1s", "1m1m"]
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(adm.ConfigError, match=r"^limits\.x\.timeout: expected a duration"):
        parse_duration(text, "limits.x.timeout")


def test_parse_duration_still_accepts_units_largest_first() -> None:
    assert parse_duration("1h30m") == 5400.0
    assert parse_duration("1d2h3m4s5ms") == 93784.005
    assert parse_duration("1m30s") == 90.0


@pytest.mark.parametrize(
    "value", [10**400, (10**400, "1s"), (1, 10**400), "1" * 400 + "/s", "1/" + "1" * 400 + "s"]
)
def test_parse_rate_huge_numbers(value: object) -> None:
    with pytest.raises(adm.ConfigError, match=r"^limits\.x\.rate: expected a "):
        parse_rate(value, "limits.x.rate")  # type: ignore[arg-type]


def test_json_rate_of_400_digits_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "admission.json"
    path.write_text('{"limits": {"x": {"rate": ' + "1" * 400 + "}}}", encoding="utf-8")
    with pytest.raises(adm.ConfigError) as info:
        Config.from_file(path, env=False)
    assert str(info.value).startswith(f"{path}: limits.x.rate: expected a rate")


def test_json_timeout_of_400_digits_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "admission.json"
    path.write_text('{"limits": {"x": {"timeout": ' + "1" * 400 + "}}}", encoding="utf-8")
    with pytest.raises(adm.ConfigError, match=r"limits\.x\.timeout: expected a finite number"):
        Config.from_file(path, env=False)


def test_yaml_rate_of_400_digits_names_file_and_key(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    path = tmp_path / "admission.yaml"
    path.write_text("limits:\n  x:\n    rate: " + "1" * 400 + "\n", encoding="utf-8")
    with pytest.raises(adm.ConfigError) as info:
        Config.from_file(path, env=False)
    assert str(info.value).startswith(f"{path}: limits.x.rate: expected a rate")


@pytest.mark.parametrize("suffix", [".toml", ".json", ".yaml"])
def test_numbers_beyond_the_int_digit_limit_name_the_file(tmp_path: Path, suffix: str) -> None:
    if suffix == ".yaml":
        pytest.importorskip("yaml")
    path = tmp_path / f"admission{suffix}"
    text = {
        ".toml": f"[limits.x]\nconcurrency = {MANY_DIGITS}\n",
        ".json": '{"limits": {"x": {"concurrency": ' + MANY_DIGITS + "}}}",
        ".yaml": f"limits:\n  x:\n    concurrency: {MANY_DIGITS}\n",
    }[suffix]
    path.write_text(text, encoding="utf-8")
    with pytest.raises(adm.ConfigError) as info:
        Config.from_file(path, env=False)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize("suffix", [".toml", ".json", ".yaml"])
def test_deeply_nested_files_name_the_file(tmp_path: Path, suffix: str) -> None:
    if suffix == ".yaml":
        pytest.importorskip("yaml")
    path = tmp_path / f"admission{suffix}"
    # Deeper than the interpreter's default recursion limit (1,000), not much more: PyYAML's
    # scanner is quadratic in the depth of flow collections (5,000 took 46 s on a busy host).
    # The limit is pinned to that default here: a test run in the same process may have
    # raised it (mypy's API sets 16,384), and then 1,500 levels parse.
    deep = "[" * 1500 + "]" * 1500
    text = {
        ".toml": f"[limits.x]\nconcurrency = {deep}\n",
        ".json": '{"limits": {"x": {"concurrency": ' + deep + "}}}",
        ".yaml": f"limits:\n  x:\n    concurrency: {deep}\n",
    }[suffix]
    path.write_text(text, encoding="utf-8")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        with pytest.raises(adm.ConfigError) as info:
            Config.from_file(path, env=False)
    finally:
        sys.setrecursionlimit(limit)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    if suffix == ".json" and sys.version_info >= (3, 13):
        # 3.13's json parser is bound by the C stack, not the recursion limit: 1,500 levels
        # parse, and the value is refused for what it is.
        assert "limits.x.concurrency: expected an integer" in message
    else:
        assert "nested too deeply" in message


def test_policy_parent_chain_5000_deep(tmp_path: Path) -> None:
    policies = {f"p{i}": {"parent": f"p{i - 1}" if i else "default"} for i in range(5000)}
    policies["p4999"]["concurrency"] = 3  # type: ignore[assignment]
    data = {"policies": policies, "limits": {"x": {"policy": "p4999"}}}
    assert Config.from_dict(data).limits["x"].concurrency == 3
    path = tmp_path / "admission.json"
    policies["p0"]["parent"] = "p4999"  # now a cycle 5000 long
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(adm.ConfigError) as info:
        Config.from_file(path, env=False)
    assert str(info.value).startswith(f"{path}: policies.")
    assert "inheritance cycle" in str(info.value)
