"""``[stores.NAME]`` tables and ``store =`` in limits and policies: parsing, inheritance,
environment, and the errors (key, source, "did you mean", secrets never shown)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import admission as adm
from admission.config import Config

pytestmark = pytest.mark.usefixtures("no_admission_variables")

SECRET = "s3cr%40t"


def test_each_kind_and_its_options() -> None:
    cfg = Config.from_dict(
        {
            "stores": {
                "local": {"kind": "shared_memory", "capacity": 64, "mode": 0o640},
                "host": {"kind": "shared_memory", "name": "myapp", "mode": "0600"},
                "test": {"kind": "memory", "timeout": "50ms", "latency": 0},
                "cache": {
                    "kind": "redis",
                    "url": "redis://cache:6379/0",
                    "timeout": "100ms",
                    "prefix": "app",
                },
                "db": {
                    "kind": "postgres",
                    "dsn": "postgresql://app@db/app",
                    "schema": "limits",
                    "timeout": 0.2,
                    "create": False,
                },
            }
        }
    )
    stores = cfg.stores
    assert (stores["local"].kind, dict(stores["local"].options)) == (
        "shared_memory",
        {"capacity": 64, "mode": 0o640, "name": "local"},  # named after the table
    )
    assert dict(stores["host"].options) == {"name": "myapp", "mode": 0o600}
    assert dict(stores["test"].options) == {"timeout": 0.05, "latency": 0.0}
    assert dict(stores["cache"].options) == {
        "url": "redis://cache:6379/0",
        "timeout": 0.1,
        "prefix": "app",
    }
    assert dict(stores["db"].options) == {
        "dsn": "postgresql://app@db/app",
        "schema": "limits",
        "timeout": 0.2,
        "create": False,
    }
    assert [s.network for s in stores.values()] == [False, False, True, True, True]


def test_a_limit_names_its_store_itself_or_through_its_policy_or_the_defaults() -> None:
    cfg = Config.from_dict(
        {
            "stores": {"local": {"kind": "shared_memory"}, "test": {"kind": "memory"}},
            "defaults": {"store": "local"},
            "policies": {"remote": {"store": "test", "on_store_error": "open", "lease": "10s"}},
            "limits": {
                "a": {},
                "b": {"policy": "remote"},
                "c": {"policy": "remote", "store": "none"},
                "d": {"store": "test", "instances": 4, "on_store_error": "local"},
            },
        }
    )
    limits = cfg.limits
    assert limits["a"].store == "local"
    assert (limits["b"].store, limits["b"].on_store_error, limits["b"].lease) == (
        "test",
        "open",
        10,
    )
    assert limits["c"].store is None  # "none": back in this process's memory
    assert (limits["d"].instances, limits["d"].on_store_error) == (4, "local")
    assert Config.from_dict({"limits": {"x": {}}}).limits["x"].store is None  # the default


def test_toml_file_with_stores(tmp_path: Path) -> None:
    path = tmp_path / "admission.toml"
    path.write_text(
        '[stores.local]\nkind = "shared_memory"\nmode = 0o600\n\n'
        '[limits.openai]\npolicy = "openai"\nstore = "local"\n'
    )
    cfg = Config.from_file(path, env=False)
    assert cfg.stores["local"].options["mode"] == 0o600
    assert cfg.limits["openai"].store == "local"


def test_environment_sets_a_limit_s_store_fields() -> None:
    data = {
        "stores": {"test": {"kind": "memory"}},
        "limits": {"api": {"store": "test"}},
    }
    env = {
        "ADMISSION_API_ON_STORE_ERROR": "local",
        "ADMISSION_API_INSTANCES": "3",
        "ADMISSION_API_LEASE": "5s",
    }
    api = Config.from_dict(data, env=env).limits["api"]
    assert (api.on_store_error, api.instances, api.lease) == ("local", 3, 5.0)
    moved = Config.from_dict(data, env={"ADMISSION_API_STORE": "none"}).limits["api"]
    assert moved.store is None
    with pytest.raises(adm.ConfigError) as info:
        Config.from_dict(data, env={"ADMISSION_API_STORE": "tset"})
    assert str(info.value).startswith(
        "environment variable ADMISSION_API_STORE: limits.api.store: no [stores.tset] table "
        "(did you mean 'test'?)"
    )


def test_url_and_dsn_from_the_environment_never_shown() -> None:
    url = f"redis://app:{SECRET}@cache:6379/0"
    dsn = f"postgresql://app:{SECRET}@db/app"
    cfg = Config.from_dict(
        {
            "stores": {
                "cache": {"kind": "redis", "url_env": "CACHE_URL"},
                "db": {"kind": "postgres", "dsn_env": "DB_DSN"},
            }
        },
        env={"CACHE_URL": url, "DB_DSN": dsn},
    )
    assert cfg.stores["cache"].options["url"] == url
    assert cfg.stores["db"].options["dsn"] == dsn
    shown = repr(cfg)
    assert SECRET not in shown
    assert "s3cr" not in shown
    assert "redis://app:***@cache:6379/0" in shown
    assert "postgresql://app:***@db/app" in shown


@pytest.mark.parametrize(
    ("stores", "message"),
    [
        ({"x": {}}, r"^<dict>: stores\.x\.kind: expected one of: shared_memory, memory, redis, "),
        (
            {"x": {"kind": "shared-memory"}},
            r"^<dict>: stores\.x\.kind: .*got 'shared-memory' \(did you mean 'shared_memory'\?\)$",
        ),
        (
            {"x": {"kind": "redis", "url": "redis://h/0", "prefx": "a"}},
            r"^<dict>: stores\.x\.prefx: unknown key \(did you mean 'prefix'\?\); a redis store "
            r"takes: kind, url, timeout, prefix, url_env$",
        ),
        (
            {"x": {"kind": "shared_memory", "url": "redis://h/0"}},
            r"^<dict>: stores\.x\.url: unknown key; a shared_memory store takes: kind, name, "
            r"capacity, mode$",
        ),
        (
            {"x": {"kind": "postgres", "url_env": "X"}},
            r"^<dict>: stores\.x\.url_env: unknown key; a postgres store takes: kind, dsn, "
            r"schema, timeout, create, dsn_env$",
        ),
        (
            {"x": {"kind": "shared_memory", "capacity": 0}},
            r"^<dict>: stores\.x\.capacity: expected an integer from 1 to 65536, got 0$",
        ),
        (
            {"x": {"kind": "shared_memory", "mode": 600}},
            r"^<dict>: stores\.x\.mode: expected permissions such as 0o600",
        ),
        (
            {"x": {"kind": "shared_memory", "mode": 0o666}},
            r"^<dict>: stores\.x\.mode: expected permissions without write access for others",
        ),
        (
            {"a:b": {"kind": "shared_memory"}},
            r"^<dict>: stores\.a:b\.name \(default: the table's name\): expected a segment name",
        ),
        (
            {"x": {"kind": "shared_memory", "name": "../etc"}},
            r"^<dict>: stores\.x\.name: expected a segment name",
        ),
        ({"x": {"kind": "memory", "timeout": 0}}, r"^<dict>: stores\.x\.timeout: .*> 0, got 0$"),
        (
            {"x": {"kind": "redis"}},
            r"^<dict>: stores\.x: expected exactly one of url \(the URL\) or url_env",
        ),
        (
            {"x": {"kind": "redis", "url": "http://h/0"}},
            r"^<dict>: stores\.x\.url: expected a redis://, rediss:// or unix:// URL, got "
            r"'http://h/0'$",
        ),
        (
            {"x": {"kind": "redis", "url_env": "NOT_SET_ANYWHERE"}},
            r"^<dict>: stores\.x\.url_env: the environment variable NOT_SET_ANYWHERE is not set$",
        ),
        (
            {"x": {"kind": "postgres", "dsn": "postgresql://h/db", "schema": "1x"}},
            r"^<dict>: stores\.x\.schema: expected a schema name",
        ),
        (
            {"x": {"kind": "postgres", "dsn": "postgresql://h/db", "create": "yes"}},
            r"^<dict>: stores\.x\.create: expected true or false, got 'yes'$",
        ),
        ({"x": "redis"}, r"^<dict>: stores\.x: expected a table, got 'redis'$"),
        ({"x": {"kind": ["redis"]}}, r"^<dict>: stores\.x\.kind: .*got \['redis'\]$"),
        ({"x": {"kind": "memory", "timeout": [1]}}, r"^<dict>: stores\.x\.timeout: expected a "),
    ],
)
def test_store_table_errors(stores: dict[str, Any], message: str) -> None:
    with pytest.raises(adm.ConfigError, match=message):
        Config.from_dict({"stores": stores})


def test_a_bad_url_or_dsn_is_refused_without_its_password() -> None:
    with pytest.raises(adm.ConfigError) as info:
        Config.from_dict({"stores": {"x": {"kind": "redis", "url": f"http://u:{SECRET}@h/0"}}})
    assert "s3cr" not in str(info.value)
    assert "http://u:***@h/0" in str(info.value)
    bad_dsn = f"postgresql://app:{SECRET}@db/app#x"  # a '#': how an unencoded password reads
    with pytest.raises(adm.ConfigError) as info:
        Config.from_dict({"stores": {"x": {"kind": "postgres", "dsn": bad_dsn}}})
    assert str(info.value).startswith("<dict>: stores.x.dsn: ")
    assert "s3cr" not in str(info.value)
    with pytest.raises(adm.ConfigError) as info:
        Config.from_dict(
            {"stores": {"x": {"kind": "redis", "url_env": "URL"}}},
            env={"URL": f"http://u:{SECRET}@h/0"},
        )
    assert str(info.value).startswith("<dict>: stores.x.url_env: expected a redis://")
    assert "s3cr" not in str(info.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"stores": {"local": {"kind": "shared_memory"}}, "limits": {"a": {"store": "locl"}}},
            r"^<dict>: limits\.a\.store: no \[stores\.locl\] table \(did you mean 'local'\?\); "
            r"known: local$",
        ),
        (
            {"limits": {"a": {"store": "local"}}},
            r"^<dict>: limits\.a\.store: no \[stores\.local\] table; known: none$",
        ),
        (
            {"policies": {"p": {"store": "nope"}}},
            r"^<dict>: policies\.p\.store: no \[stores\.nope\] table; known: none$",
        ),
        ({"defaults": {"store": "nope"}}, r"^<dict>: defaults\.store: no \[stores\.nope\] table"),
        (
            {"limits": {"a": {"store": 5}}},
            r"^<dict>: limits\.a\.store: expected the name of a \[stores\.NAME\] table, or "
            r"\"none\", got 5$",
        ),
        (
            {
                "stores": {"t": {"kind": "memory"}},
                "limits": {"a": {"store": "t", "on_store_error": "opne"}},
            },
            r"^<dict>: limits\.a\.on_store_error: expected one of: closed, open, local, got "
            r"'opne' \(did you mean 'open'\?\)$",
        ),
        (
            {"stores": {"t": {"kind": "memory"}}, "limits": {"a": {"store": "t", "lease": "0s"}}},
            r"^<dict>: limits\.a\.lease: .*> 0",
        ),
        (
            {"stores": {"t": {"kind": "memory"}}, "limits": {"a": {"store": "t", "instances": 0}}},
            r"^<dict>: limits\.a\.instances: expected an integer from 1 to ",
        ),
        (
            {
                "stores": {"t": {"kind": "memory"}},
                "limits": {"a": {"store": "t", "on_store_error": "local"}},
            },
            r"^<dict>: limits\.a\.instances: on_store_error = \"local\" needs instances",
        ),
        (
            {
                "stores": {"local": {"kind": "shared_memory"}},
                "limits": {"a": {"store": "local", "lease": "10s"}},
            },
            r"^<dict>: limits\.a\.lease: only a limit in a network store \(memory, redis, "
            r"postgres\) has lease, and its store 'local' is shared_memory$",
        ),
        (
            {"limits": {"a": {"on_store_error": "open"}}},
            r"^<dict>: limits\.a\.on_store_error: only a limit in a network store .* and the "
            r"limit is in no store$",
        ),
    ],
)
def test_store_fields_errors(data: dict[str, Any], message: str) -> None:
    with pytest.raises(adm.ConfigError, match=message):
        Config.from_dict(data)


def test_network_fields_inherited_by_a_limit_outside_a_network_store_are_ignored() -> None:
    # A policy for limits in a network store, used also by one in shared memory: only a
    # limit's own table is held to the rule.
    cfg = Config.from_dict(
        {
            "stores": {"local": {"kind": "shared_memory"}},
            "policies": {"shared": {"on_store_error": "open", "lease": "10s"}},
            "limits": {"a": {"policy": "shared", "store": "local"}, "b": {"policy": "shared"}},
        }
    )
    assert cfg.limits["a"].lease == 10.0
    assert cfg.limits["b"].store is None


def test_an_error_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "admission.toml"
    path.write_text('[stores.local]\nkind = "shared_memroy"\n')
    with pytest.raises(adm.ConfigError) as info:
        Config.from_file(path, env=False)
    assert str(info.value).startswith(f"{path}: stores.local.kind: ")
    assert "(did you mean 'shared_memory'?)" in str(info.value)
