"""`PoolConfig` takes durations as everything else in admission does: a number of seconds or a
duration string ("10s", "250ms", "1m"), stored as float seconds; bad values are refused naming
the setting and the value. The same from a configuration file's ``[pools.NAME]`` tables.

No server: nothing here opens a pool (the pools' behaviour is in tests/integration)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

import admission as adm
from admission.config import Config

DSN = "postgresql://app:s3cret@db.internal/rag"

# Every time setting of PoolConfig: (None allowed, 0 allowed).
DURATIONS = {
    "acquire_timeout": (True, True),
    "connect_timeout": (False, False),
    "command_timeout": (True, False),
    "close_timeout": (False, True),
    "health_check_interval": (True, False),
    "max_inactive_connection_lifetime": (False, True),
    "reconnect_base": (False, False),
    "reconnect_cap": (False, False),
}
OPTIONAL = [name for name, (optional, _) in DURATIONS.items() if optional]
REQUIRED = [name for name, (optional, _) in DURATIONS.items() if not optional]
POSITIVE = [name for name, (_, zero) in DURATIONS.items() if not zero]
ZERO_OK = [name for name, (_, zero) in DURATIONS.items() if zero]


def pool(**settings: Any) -> adm.PoolConfig:
    # reconnect_cap must be >= reconnect_base: a base under test gets room above it.
    settings.setdefault("reconnect_cap", "1d")
    return adm.PoolConfig(DSN, **settings)


def test_every_time_setting_is_covered() -> None:
    floats = {f.name for f in dataclasses.fields(adm.PoolConfig) if "float" in str(f.type)}
    assert floats == set(DURATIONS)


@pytest.mark.parametrize("name", DURATIONS)
@pytest.mark.parametrize(
    ("given", "seconds"),
    [("10s", 10.0), ("250ms", 0.25), ("1m", 60.0), ("1h30m", 5400.0), (" 2.5 ", 2.5), (3, 3.0)],
)
def test_durations_are_taken_as_strings_or_numbers_and_stored_as_seconds(
    name: str, given: str | int, seconds: float
) -> None:
    value = getattr(pool(**{name: given}), name)
    assert value == seconds
    assert type(value) is float


def test_the_same_duration_spelled_differently_is_the_same_config() -> None:
    spelled = pool(acquire_timeout="10s", connect_timeout="5000ms", close_timeout="1m")
    numbers = pool(acquire_timeout=10, connect_timeout=5.0, close_timeout=60)
    assert spelled == numbers
    assert repr(spelled) == repr(numbers)


@pytest.mark.parametrize("name", OPTIONAL)
def test_optional_durations_take_none(name: str) -> None:
    assert getattr(pool(**{name: None}), name) is None


@pytest.mark.parametrize("name", REQUIRED)
def test_required_durations_refuse_none(name: str) -> None:
    with pytest.raises(TypeError, match=rf"^{name} must be a number of seconds, a duration "):
        pool(**{name: None})


@pytest.mark.parametrize("name", ZERO_OK)
@pytest.mark.parametrize("zero", [0, 0.0, "0s", "0ms"])
def test_zero_where_it_means_at_once(name: str, zero: float | str) -> None:
    assert getattr(pool(**{name: zero}), name) == 0.0


@pytest.mark.parametrize("name", POSITIVE)
@pytest.mark.parametrize("zero", [0, 0.0, "0s", "0ms"])
def test_zero_where_it_makes_no_sense(name: str, zero: float | str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be a finite number of seconds > 0, got"):
        pool(**{name: zero})


BAD = [
    # value, error (a call argument: never a ConfigError, which is for configuration)
    ("soon", ValueError),
    ("10 parsecs", ValueError),
    ("-1s", ValueError),
    ("", ValueError),
    ("inf", ValueError),
    (-1, ValueError),
    (-0.001, ValueError),
    (math.nan, ValueError),
    (math.inf, ValueError),
    (True, TypeError),
    (False, TypeError),
    (b"10s", TypeError),
    ([10], TypeError),
]


@pytest.mark.parametrize("name", DURATIONS)
@pytest.mark.parametrize(("bad", "error"), BAD, ids=repr)
def test_bad_durations_are_refused_naming_the_setting_and_the_value(
    name: str, bad: object, error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        pool(**{name: bad})
    assert type(info.value) is error
    message = str(info.value)
    assert message.startswith(name)
    assert repr(bad) in message
    assert "s3cret" not in message


def test_a_bad_duration_string_says_what_is_expected() -> None:
    with pytest.raises(
        ValueError, match=r"^acquire_timeout must be a duration such as \"10s\", .*'soon'$"
    ):
        pool(acquire_timeout="soon")
    with pytest.raises(ValueError, match=r"^close_timeout must be a finite number of seconds >= 0"):
        pool(close_timeout=-1)


def test_reconnect_cap_below_base_shows_the_values_as_given() -> None:
    with pytest.raises(
        ValueError, match=r"^reconnect_cap \('500ms'\) must be >= reconnect_base \('1s'\)$"
    ):
        adm.PoolConfig(DSN, reconnect_base="1s", reconnect_cap="500ms")
    cfg = adm.PoolConfig(DSN, reconnect_base="1s", reconnect_cap="1000ms")
    assert (cfg.reconnect_base, cfg.reconnect_cap) == (1.0, 1.0)


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"min_size": -1}, ValueError, "min_size must be an integer >= 0, got -1"),
        ({"min_size": True}, TypeError, "min_size must be an integer >= 0, got True"),
        ({"max_size": 0}, ValueError, "max_size must be an integer >= 1, got 0"),
        ({"max_size": "10"}, TypeError, "max_size must be an integer >= 1, got '10'"),
        ({"max_waiters": -1}, ValueError, "max_waiters must be an integer >= 0, got -1"),
        ({"max_waiters": 1.5}, TypeError, "max_waiters must be an integer >= 0, got 1.5"),
    ],
)
def test_bad_counts_are_refused_as_everywhere_else(
    settings: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        adm.PoolConfig(DSN, **settings)
    assert type(info.value) is error
    assert str(info.value) == message


def test_counts_at_their_bounds() -> None:
    cfg = adm.PoolConfig(DSN, min_size=0, max_size=1, max_waiters=0)
    assert (cfg.min_size, cfg.max_size, cfg.max_waiters) == (0, 1, 0)
    assert adm.PoolConfig(DSN, max_waiters=None).max_waiters is None


def test_replace_takes_duration_strings_too() -> None:
    cfg = dataclasses.replace(pool(), acquire_timeout="2s", max_size=20)
    assert (cfg.acquire_timeout, cfg.max_size, cfg.reconnect_cap) == (2.0, 20, 86400.0)


# ------------------------------------------------------------------ configuration files

EVERY_DURATION = {
    "acquire_timeout": "250ms",
    "connect_timeout": "2s",
    "command_timeout": "1m",
    "close_timeout": "0s",
    "health_check_interval": "30s",
    "max_inactive_connection_lifetime": "5m",
    "reconnect_base": "100ms",
    "reconnect_cap": "1.5s",
}
EVERY_SECONDS = {
    "acquire_timeout": 0.25,
    "connect_timeout": 2.0,
    "command_timeout": 60.0,
    "close_timeout": 0.0,
    "health_check_interval": 30.0,
    "max_inactive_connection_lifetime": 300.0,
    "reconnect_base": 0.1,
    "reconnect_cap": 1.5,
}


def seconds_of(cfg: adm.PoolConfig) -> dict[str, float | None]:
    return {name: getattr(cfg, name) for name in DURATIONS}


def test_a_pool_table_takes_every_duration_as_a_string() -> None:
    assert set(EVERY_DURATION) == set(DURATIONS)
    cfg = Config.from_dict({"pools": {"rag": {"dsn": DSN, **EVERY_DURATION}}})
    assert seconds_of(cfg.pools["rag"]) == EVERY_SECONDS


def test_a_toml_pool_table(tmp_path: Path) -> None:
    lines = "\n".join(f'{name} = "{value}"' for name, value in EVERY_DURATION.items())
    path = tmp_path / "admission.toml"
    path.write_text(f'[pools.rag]\ndsn_env = "RAG_DSN"\nmax_size = 4\n{lines}\n', "utf-8")
    cfg = Config.from_file(path, env={"RAG_DSN": DSN})
    assert seconds_of(cfg.pools["rag"]) == EVERY_SECONDS
    assert cfg.pools["rag"].max_size == 4


def test_a_yaml_pool_table(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    lines = "\n".join(f"    {name}: {value}" for name, value in EVERY_DURATION.items())
    path = tmp_path / "admission.yaml"
    path.write_text(f"pools:\n  rag:\n    dsn: {DSN}\n{lines}\n", "utf-8")
    assert seconds_of(Config.from_file(path, env={}).pools["rag"]) == EVERY_SECONDS


def test_a_pool_table_takes_numbers_and_none() -> None:
    table = {"dsn": DSN, "acquire_timeout": "none", "command_timeout": 1.5, "close_timeout": 3}
    cfg = Config.from_dict({"pools": {"rag": table}}).pools["rag"]
    assert (cfg.acquire_timeout, cfg.command_timeout, cfg.close_timeout) == (None, 1.5, 3.0)


def test_a_yaml_or_json_null_switches_an_optional_setting_off(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    path = tmp_path / "admission.yaml"
    path.write_text(
        f"pools:\n  rag:\n    dsn: {DSN}\n    acquire_timeout: null\n    max_waiters: ~\n",
        "utf-8",
    )
    cfg = Config.from_file(path, env={}).pools["rag"]
    assert (cfg.acquire_timeout, cfg.max_waiters) == (None, None)
    table = {"dsn": DSN, "command_timeout": None, "health_check_interval": None}
    cfg = Config.from_dict({"pools": {"rag": table}}).pools["rag"]
    assert (cfg.command_timeout, cfg.health_check_interval) == (None, None)
    with pytest.raises(adm.ConfigError, match=r"pools\.rag\.connect_timeout: .* got None"):
        Config.from_dict({"pools": {"rag": {"dsn": DSN, "connect_timeout": None}}})


def test_the_policy_timeout_from_the_environment_is_the_acquire_timeout() -> None:
    data = {"pools": {"rag": {"dsn": DSN, "policy": "default"}}}
    cfg = Config.from_dict(data, env={"ADMISSION_DEFAULTS_TIMEOUT": "1500ms"})
    assert cfg.pools["rag"].acquire_timeout == 1.5


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"acquire_timeout": "soon"}, r"pools\.rag\.acquire_timeout: expected a duration .*'soon'"),
        ({"connect_timeout": "none"}, r"pools\.rag\.connect_timeout: expected a duration"),
        ({"reconnect_cap": True}, r"pools\.rag\.reconnect_cap: expected a duration .*True"),
        (
            {"connect_timeout": "0s"},
            r"pools\.rag: connect_timeout must be a finite number of seconds > 0, got 0\.0",
        ),
        ({"health_check_interval": "-5s"}, r"pools\.rag\.health_check_interval: .*'-5s'"),
    ],
)
def test_bad_durations_in_a_pool_table_name_the_key(setting: dict[str, Any], message: str) -> None:
    with pytest.raises(adm.ConfigError, match=rf"^<dict>: {message}"):
        Config.from_dict({"pools": {"rag": {"dsn": DSN, **setting}}})


def test_a_reload_changes_the_acquire_timeout_given_as_a_string() -> None:
    table = {"dsn": DSN, "acquire_timeout": "10s", "connect_timeout": "5s"}
    m = adm.ConcurrencyManager.from_dict({"pools": {"rag": table}})
    pools = m.pools
    assert pools._pools["rag"].config.acquire_timeout == 10.0
    # The fixed settings spelled another way are no change: only acquire_timeout changes.
    m.reload({"pools": {"rag": {**table, "acquire_timeout": "250ms", "connect_timeout": 5}}})
    assert m.pools is pools
    assert m.config.pools["rag"].acquire_timeout == 0.25
    assert pools._pools["rag"].config.acquire_timeout == 0.25
    with pytest.raises(adm.ConfigError, match=r"pool 'rag': connect_timeout cannot change"):
        m.reload({"pools": {"rag": {**table, "connect_timeout": "6s"}}})
    assert pools._pools["rag"].config.acquire_timeout == 0.25
