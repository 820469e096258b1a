"""Configuration: TOML, YAML, JSON, dicts, environment overrides, and every error path."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path
from typing import Any

import pytest

import admission as adm
from admission.config import Config, env_name
from admission.durations import Rate

pytestmark = pytest.mark.usefixtures("no_admission_variables")

EXAMPLE = Path(__file__).parents[2] / "examples" / "admission.toml"

TOML = """
[defaults]
timeout = "30s"

[limits.openai]
policy = "openai"
concurrency = 20
rate = "60/min"
tokens = "90000/min"
timeout = "60s"

[limits.rag]
policy = "database"
concurrency = 10
"""

YAML = """
defaults:
  timeout: 30s
limits:
  openai:
    policy: openai
    concurrency: 20
    rate: 60/min
    tokens: 90000/min
    timeout: 60s
  rag:
    policy: database
    concurrency: 10
"""

DATA: dict[str, Any] = {
    "defaults": {"timeout": "30s"},
    "limits": {
        "openai": {
            "policy": "openai",
            "concurrency": 20,
            "rate": "60/min",
            "tokens": "90000/min",
            "timeout": "60s",
        },
        "rag": {"policy": "database", "concurrency": 10},
    },
}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def check_example(cfg: Config) -> None:
    openai, rag = cfg.limits["openai"], cfg.limits["rag"]
    assert (openai.parent, openai.concurrency, openai.timeout) == ("openai", 20, 60.0)
    assert (openai.rate, openai.tokens) == (Rate(60, 60.0), Rate(90000, 60.0))
    assert (rag.parent, rag.concurrency, rag.timeout, rag.rate) == ("database", 10, 10.0, None)
    assert list(cfg.limits) == ["openai", "rag"]


def test_toml_file(tmp_path: Path) -> None:
    path = write(tmp_path, "admission.toml", TOML)
    cfg = Config.from_file(path)
    check_example(cfg)
    assert (cfg.source, cfg.path) == (str(path), path)


def test_dict() -> None:
    cfg = Config.from_dict(DATA)
    check_example(cfg)
    assert (cfg.source, cfg.path) == ("<dict>", None)


def test_yaml_file(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    for suffix in (".yaml", ".yml"):
        check_example(Config.from_file(write(tmp_path, "admission" + suffix, YAML)))


def test_json_file(tmp_path: Path) -> None:
    check_example(Config.from_file(write(tmp_path, "admission.json", json.dumps(DATA))))


def test_shipped_example() -> None:
    cfg = Config.from_file(EXAMPLE, env=False)
    assert set(cfg.limits) == {"openai", "anthropic", "rag", "reindex"}
    assert cfg.limits["anthropic"].rate == Rate(50, 60.0)
    assert (cfg.limits["reindex"].concurrency, cfg.limits["reindex"].timeout) == (3, 300.0)
    assert cfg.policies["batch"].parent == "default"


def test_empty_configurations() -> None:
    assert dict(Config.from_dict({}).limits) == {}
    assert (
        Config.from_dict({"limits": {"x": {}}}).limits["x"].fields()
        == adm.policies.DEFAULT["default"].fields()
    )


def test_empty_yaml_file(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    assert dict(Config.from_file(write(tmp_path, "a.yaml", "")).limits) == {}


def test_defaults_and_policies_sections() -> None:
    cfg = Config.from_dict(
        {
            "defaults": {"timeout": "20s", "concurrency": 4},
            "policies": {"llm": {"timeout": "2m"}, "batch": {"parent": "stress", "timeout": "1h"}},
            "limits": {
                "a": {},
                "b": {"policy": "openai"},
                "c": {"policy": "batch"},
                "d": {"policy": "database"},
            },
        }
    )
    a, b, c, d = (cfg.limits[n] for n in "abcd")
    assert (a.timeout, a.concurrency) == (20.0, 4)
    assert (b.timeout, b.concurrency) == (120.0, 20)
    assert (c.timeout, c.concurrency, c.parent) == (3600.0, 5, "batch")
    assert (d.timeout, d.concurrency) == (10.0, 4)


def test_policies_default_and_defaults_merge() -> None:
    cfg = Config.from_dict(
        {
            "defaults": {"timeout": "1s", "concurrency": 2},
            "policies": {"default": {"timeout": "2s"}},
        }
    )
    assert (cfg.policies["default"].timeout, cfg.policies["default"].concurrency) == (2.0, 2)


# -- errors: where, which key, what was expected, what was found ---------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"limit": {}},
            r"^<dict>: limit: unknown key \(did you mean 'limits'\?\); expected one "
            r"of: defaults, policies, limits, stores, pools, breakers, retries$",
        ),
        ({"limits": []}, r"^<dict>: limits: expected a table, got \[\]$"),
        ({"limits": {"a": 3}}, r"^<dict>: limits\.a: expected a table, got 3$"),
        (
            {"limits": {"a b": {}}},
            r"^<dict>: limits: expected names of letters, digits, .* got 'a b'$",
        ),
        ({"limits": {"": {}}}, r"^<dict>: limits: expected names .* got ''$"),
        (
            {"limits": {"a": {"rat": "1/s"}}},
            r"^<dict>: limits\.a\.rat: unknown key \(did you mean 'rate'\?\)",
        ),
        ({"limits": {"a": {"parent": "llm"}}}, r"^<dict>: limits\.a\.parent: unknown key"),
        (
            {"limits": {"a": {"policy": "lm"}}},
            r"^<dict>: limits\.a\.policy: expected one of the policies: default, "
            r"api, llm, .* got 'lm' \(did you mean 'llm'\?\)$",
        ),
        (
            {"limits": {"a": {"policy": 3}}},
            r"^<dict>: limits\.a\.policy: expected one of the policies: .* got 3$",
        ),
        (
            {"limits": {"a": {"rate": "sixty/min"}}},
            r"^<dict>: limits\.a\.rate: expected a rate such as \"60/min\".* got 'sixty/min'$",
        ),
        (
            {"limits": {"a": {"timeout": "forever"}}},
            r"^<dict>: limits\.a\.timeout: expected a duration",
        ),
        (
            {"limits": {"a": {"concurrency": 0}}},
            r"^<dict>: limits\.a\.concurrency: expected an integer from 1 to "
            r"1073741823, or \"none\", got 0$",
        ),
        ({"defaults": {"timeout": "x"}}, r"^<dict>: defaults\.timeout: expected a duration"),
        ({"defaults": {"policy": "llm"}}, r"^<dict>: defaults\.policy: unknown key"),
        ({"defaults": 5}, r"^<dict>: defaults: expected a table, got 5$"),
        (
            {"policies": {"x": {"parent": "nope"}}},
            r"^<dict>: policies\.x\.parent: expected one of the policies",
        ),
        (
            {"policies": {"x": {"concurrency": -2}}},
            r"^<dict>: policies\.x\.concurrency: expected an integer",
        ),
        ({"policies": {"x": "fast"}}, r"^<dict>: policies\.x: expected a table, got 'fast'$"),
        ({"policies": {"a": {"parent": "b"}, "b": {"parent": "a"}}}, r"inheritance cycle"),
    ],
)
def test_dict_errors(data: dict[str, Any], message: str) -> None:
    with pytest.raises(adm.ConfigError, match=message):
        Config.from_dict(data)


def test_not_a_table_at_all() -> None:
    with pytest.raises(adm.ConfigError, match=r"^<dict>: expected a table, got \[1\]$"):
        Config.from_dict([1])  # type: ignore[arg-type]


def test_burst_that_takes_too_long_is_refused_when_the_manager_builds_it() -> None:
    with pytest.raises(adm.ConfigError, match=r"^<dict>: limits\.a: .*burst"):
        adm.ConcurrencyManager.from_dict({"limits": {"a": {"rate": "1/d", "burst": 100_000}}})


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "admission.toml", '[limits.rag]\npolicy = "database"\ntimeout = "ten"\n')
    with pytest.raises(adm.ConfigError) as info:
        Config.from_file(path)
    assert str(info.value) == (
        f'{path}: limits.rag.timeout: expected a duration such as "10s", "250ms", "1.5m", '
        "\"1h30m\" or a number of seconds, got 'ten'"
    )
    assert (info.value.source, info.value.key) == (str(path), "limits.rag.timeout")


def test_toml_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, "admission.toml", "[limits.rag\nconcurrency = 1\n")
    with pytest.raises(adm.ConfigError, match=rf"^{path}: invalid TOML: .*line 1"):
        Config.from_file(path)


def test_yaml_errors(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    with pytest.raises(
        adm.ConfigError,
        match=(
            r"a\.yaml: invalid YAML at line 3, column 1: expected the node content, "
            r"but found '<stream end>'$"
        ),
    ):
        Config.from_file(write(tmp_path, "a.yaml", "limits:\n  rag: [\n"))
    with pytest.raises(adm.ConfigError, match=r"b\.yaml: expected a table at the top, got list$"):
        Config.from_file(write(tmp_path, "b.yaml", "- 1\n- 2\n"))


def test_json_errors(tmp_path: Path) -> None:
    with pytest.raises(adm.ConfigError, match=r"a\.json: invalid JSON: "):
        Config.from_file(write(tmp_path, "a.json", "{"))
    with pytest.raises(adm.ConfigError, match=r"b\.json: expected a table at the top, got int$"):
        Config.from_file(write(tmp_path, "b.json", "3"))


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(adm.ConfigError, match=r"a\.toml: expected UTF-8 text"):
        Config.from_file(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.toml"):
        Config.from_file(tmp_path / "nope.toml")


def test_yaml_without_pyyaml_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(ModuleNotFoundError, match=r"needs PyYAML: pip install 'admission\[yaml\]'"):
        Config.from_file(write(tmp_path, "a.yaml", YAML))


def test_config_errors_are_admission_and_value_errors_and_pickle() -> None:
    with pytest.raises(adm.AdmissionError) as info:
        Config.from_dict({"limits": {"a": {"rate": "x"}}})
    assert isinstance(info.value, ValueError)
    back = pickle.loads(pickle.dumps(info.value))
    assert (str(back), back.key, back.source) == (str(info.value), "limits.a.rate", "<dict>")


# -- environment overrides -----------------------------------------------------------------


def test_env_overrides_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "admission.toml", TOML)
    monkeypatch.setenv("ADMISSION_OPENAI_RATE", "30/min")
    monkeypatch.setenv("ADMISSION_RAG_CONCURRENCY", "4")
    cfg = Config.from_file(path)  # environment overrides apply by default
    assert cfg.limits["openai"].rate == Rate(30, 60.0)
    assert cfg.limits["rag"].concurrency == 4
    assert Config.from_file(path, env=False).limits["rag"].concurrency == 10


def test_env_mapping_every_field() -> None:
    env = {
        "ADMISSION_OPENAI_POLICY": "anthropic",
        "ADMISSION_OPENAI_CONCURRENCY": "3",
        "ADMISSION_OPENAI_BURST": "5",
        "ADMISSION_OPENAI_TOKENS": "1000/min",
        "ADMISSION_OPENAI_TOKEN_BURST": "100",
        "ADMISSION_OPENAI_TIMEOUT": "15s",
        "ADMISSION_OPENAI_ALERT_THRESHOLD": "95%",
    }
    p = Config.from_dict({"limits": {"openai": {"policy": "openai"}}}, env=env).limits["openai"]
    assert (p.parent, p.concurrency, p.rate, p.burst) == ("anthropic", 3, Rate(50, 60.0), 5)
    assert (p.tokens, p.token_burst, p.timeout, p.alert_threshold) == (
        Rate(1000, 60.0),
        100,
        15.0,
        0.95,
    )


def test_env_overrides_known_limits_and_defaults_only() -> None:
    env = {
        "ADMISSION_BATCH_JOBS_POLICY": "stress",  # no limit batch_jobs: ignored, not added
        "ADMISSION_DEFAULTS_TIMEOUT": "12s",
        "ADMISSION_SEARCH_RATE": "none",
        "UNRELATED": "1",
    }
    cfg = Config.from_dict({"limits": {"search": {"rate": "5/s"}}}, env=env)
    assert list(cfg.limits) == ["search"]
    assert (cfg.limits["search"].rate, cfg.limits["search"].timeout) == (None, 12.0)


def test_env_names_of_limits() -> None:
    assert env_name("openai-batch") == "OPENAI_BATCH"
    assert env_name("db.main:ro") == "DB_MAIN_RO"
    cfg = Config.from_dict(
        {"limits": {"openai-batch": {}, "x_token": {}}},
        env={"ADMISSION_OPENAI_BATCH_CONCURRENCY": "2", "ADMISSION_X_TOKEN_BURST": "7"},
    )
    assert cfg.limits["openai-batch"].concurrency == 2
    # A configured limit "x_token" wins over reading TOKEN_BURST as the field.
    assert cfg.limits["x_token"].burst == 7
    assert "x" not in cfg.limits


def test_env_never_creates_a_limit() -> None:
    # Issue 12 case 12: ADMISSION_B_RATE_BURST=3 made a limit "b_rate".
    cfg = Config.from_dict(
        {}, env={"ADMISSION_LLM_TOKEN_BURST": "9", "ADMISSION_B_RATE_BURST": "3"}
    )
    assert dict(cfg.limits) == {}
    # With a limit "b", RATE_BURST is an unknown field of it: an error naming the variable.
    with pytest.raises(
        adm.ConfigError,
        match=r"^environment variable ADMISSION_B_RATE_BURST: the limit B has no field RATE_BURST",
    ):
        Config.from_dict({"limits": {"b": {}}}, env={"ADMISSION_B_RATE_BURST": "3"})


def test_env_prefers_the_longest_configured_name() -> None:
    cfg = Config.from_dict(
        {"limits": {"b": {}, "b_rate": {}}},
        env={"ADMISSION_B_RATE_BURST": "3", "ADMISSION_B_RATE": "4/s"},
    )
    assert (cfg.limits["b_rate"].burst, cfg.limits["b"].rate) == (3, Rate(4, 1.0))


def test_unrelated_admission_variables_are_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "admission.toml", "[limits.rag]\nconcurrency = 2\n")
    monkeypatch.setenv("ADMISSION_API_KEY", "secret")
    monkeypatch.setenv("ADMISSION_LOG_LEVEL", "debug")
    monkeypatch.setenv("ADMISSION_RAG_CONCURRENCY", "3")
    cfg = Config.from_file(path)
    assert list(cfg.limits) == ["rag"]
    assert cfg.limits["rag"].concurrency == 3
    assert adm.ConcurrencyManager.from_file(path).semaphore("rag").limit == 3


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"ADMISSION_OPENAI_RATE": "sixty"},
            r"^environment variable ADMISSION_OPENAI_RATE: limits\.openai\.rate: "
            r"expected a rate .* got 'sixty'$",
        ),
        (
            {"ADMISSION_RAG_CONCURRENCY": "0"},
            r"^environment variable ADMISSION_RAG_CONCURRENCY: "
            r"limits\.rag\.concurrency: expected an integer",
        ),
        (
            {"ADMISSION_DEFAULTS_TIMEOUT": "x"},
            r"^environment variable ADMISSION_DEFAULTS_TIMEOUT: defaults\.timeout: "
            r"expected a duration",
        ),
        (
            {"ADMISSION_RAG_POLICY": "dtabase"},
            r"^environment variable ADMISSION_RAG_POLICY: limits\.rag\.policy: "
            r".*did you mean 'database'",
        ),
        (
            {"ADMISSION_RAG_SPEED": "3"},
            r"^environment variable ADMISSION_RAG_SPEED: the limit RAG has no field SPEED; "
            r"expected ADMISSION_RAG_<FIELD> with FIELD one of: POLICY, CONCURRENCY, ",
        ),
        (
            {"ADMISSION_OPENAI_RATE_LIMIT": "3"},
            r"^environment variable ADMISSION_OPENAI_RATE_LIMIT: the limit OPENAI has no field",
        ),
        (
            {"ADMISSION_DEFAULTS_TIMEOT": "3s"},
            r"^environment variable ADMISSION_DEFAULTS_TIMEOT: \[defaults\] has no field "
            r"TIMEOT \(did you mean 'timeout'\?\)",
        ),
        (
            {"ADMISSION_DEFAULTS_POLICY": "llm"},
            r"^environment variable ADMISSION_DEFAULTS_POLICY: the defaults have no policy",
        ),
    ],
)
def test_env_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(adm.ConfigError, match=message):
        Config.from_dict({"limits": {"rag": {}, "openai": {}}}, env=env)


def test_env_file_values_keep_the_file_as_source(tmp_path: Path) -> None:
    path = write(tmp_path, "a.toml", '[limits.rag]\ntimeout = "x"\n')
    with pytest.raises(adm.ConfigError, match=rf"^{path}: limits\.rag\.timeout"):
        Config.from_file(path, env={"ADMISSION_RAG_CONCURRENCY": "2"})


def test_env_name_clash() -> None:
    data: dict[str, Any] = {"limits": {"a-b": {}, "a_b": {}}}
    assert len(Config.from_dict(data, env={}).limits) == 2  # only an error when used
    with pytest.raises(
        adm.ConfigError, match=r"limits 'a-b' and 'a_b' have the same environment name A_B"
    ):
        Config.from_dict(data, env={"ADMISSION_A_B_CONCURRENCY": "1"})


def test_from_env_reads_admission_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "admission.toml", TOML)
    cfg = Config.from_env({"ADMISSION_CONFIG": str(path), "ADMISSION_RAG_TIMEOUT": "3s"})
    assert (cfg.path, cfg.limits["rag"].timeout) == (path, 3.0)
    monkeypatch.setenv("ADMISSION_CONFIG", str(path))
    monkeypatch.setenv("ADMISSION_OPENAI_CONCURRENCY", "2")
    assert Config.from_env().limits["openai"].concurrency == 2
    assert Config.from_env({}).source == "environment"


def test_reread(tmp_path: Path) -> None:
    path = write(tmp_path, "admission.toml", TOML)
    cfg = Config.from_file(path, env={"ADMISSION_RAG_CONCURRENCY": "2"})
    path.write_text(TOML.replace("concurrency = 20", "concurrency = 7"), encoding="utf-8")
    again = cfg.reread()
    assert (again.limits["openai"].concurrency, again.limits["rag"].concurrency) == (7, 2)
    with pytest.raises(
        adm.ConfigError, match=r"not read from a file, so it cannot be read again \(from <dict>\)"
    ):
        Config.from_dict({}).reread()
