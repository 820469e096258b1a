"""Policies: the remediation plan's defaults, inheritance, overrides and every validation error."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import admission as adm
from admission.durations import Rate
from admission.policies import DEFAULT, FIELDS, Policy


def test_default_policies_match_the_remediation_plan() -> None:
    d = adm.policies.DEFAULT
    assert d["default"].concurrency == 10
    assert d["stress"].concurrency == 5
    assert d["api"].concurrency == 20
    assert d["openai"].rate == Rate(60, 60.0)
    assert d["anthropic"].rate == Rate(50, 60.0)
    assert d["openai"].tokens is None  # tokens/min only when given
    assert d["default"].timeout == 30.0
    assert d["llm"].timeout == d["openai"].timeout == d["anthropic"].timeout == 60.0
    assert d["database"].timeout == 10.0
    assert {p.alert_threshold for p in d.values()} == {0.8}
    assert list(d) == ["default", "api", "llm", "openai", "anthropic", "database", "stress"]


def test_inheritance_chain() -> None:
    assert [DEFAULT[n].parent for n in DEFAULT] == [
        None,
        "default",
        "api",
        "llm",
        "llm",
        "default",
        "default",
    ]
    # openai inherits llm's timeout and api's concurrency.
    assert (DEFAULT["openai"].concurrency, DEFAULT["openai"].timeout) == (20, 60.0)


def test_policies_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT["openai"].concurrency = 1  # type: ignore[misc]


def test_derive_overrides_any_field_and_parses_strings() -> None:
    p = DEFAULT["openai"].derive(
        "mine",
        concurrency="7",
        rate="30/min",
        burst=5,
        tokens="90000/min",
        token_burst="1000",
        timeout="1m30s",
        alert_threshold="90%",
        store="local",
        on_store_error="local",
        instances="4",
        lease="10s",
    )
    assert p.fields() == {
        "concurrency": 7,
        "rate": Rate(30, 60.0),
        "burst": 5,
        "tokens": Rate(90000, 60.0),
        "token_burst": 1000,
        "timeout": 90.0,
        "alert_threshold": 0.9,
        "store": "local",
        "on_store_error": "local",
        "instances": 4,
        "lease": 10.0,
    }
    assert (p.name, p.parent) == ("mine", "openai")
    assert set(p.fields()) == set(FIELDS)


def test_derive_keeps_what_is_not_overridden() -> None:
    p = DEFAULT["anthropic"].derive("claude", tokens="40000/min")
    assert (p.concurrency, p.rate, p.timeout) == (20, Rate(50, 60.0), 60.0)


@pytest.mark.parametrize(
    "field", ["concurrency", "rate", "burst", "tokens", "token_burst", "timeout"]
)
def test_none_switches_an_inherited_limit_off(field: str) -> None:
    base = DEFAULT["openai"].derive("x", burst=3, tokens="1/s", token_burst=1)
    for spelling in ("none", " None ", None):
        assert getattr(base.derive("y", **{field: spelling}), field) is None


def test_policy_constructor_validates_and_parses() -> None:
    p = Policy(name="batch", concurrency=3, rate="100/h", timeout=5)  # type: ignore[arg-type]
    assert (p.rate, p.timeout) == (Rate(100, 3600.0), 5.0)
    assert type(p.timeout) is float
    assert Policy(name="d").fields() == DEFAULT["default"].fields()


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("concurrency", 0, 'expected an integer from 1 to 1073741823, or "none", got 0'),
        ("concurrency", -1, "expected an integer from 1 to"),
        ("concurrency", 2**30, "got 1073741824"),
        ("concurrency", True, "got True"),
        ("concurrency", 2.5, "got 2.5"),
        ("concurrency", "ten", "got 'ten'"),
        ("burst", 0, "expected an integer from 1 to"),
        ("token_burst", "1.5", "got '1.5'"),
        ("rate", "fast", "expected a rate such as"),
        ("rate", 0, "expected a rate"),
        ("tokens", "0/min", "expected a rate > 0"),
        ("timeout", "soon", "expected a duration such as"),
        ("timeout", -1, "expected a finite number of seconds >= 0"),
        ("alert_threshold", 0, "expected a fraction in (0, 1]"),
        ("alert_threshold", 1.5, "got 1.5"),
        ("alert_threshold", "high", "got 'high'"),
        ("alert_threshold", "120%", "got '120%'"),
        ("alert_threshold", None, "got None"),
        ("alert_threshold", True, "got True"),
    ],
)
def test_field_errors_name_the_key(field: str, value: object, expected: str) -> None:
    with pytest.raises(adm.ConfigError) as info:
        DEFAULT["default"].derive("rag", **{field: value})
    assert info.value.key == f"rag.{field}"
    assert str(info.value).startswith(f"rag.{field}: ")
    assert expected in str(info.value)


def test_threshold_spellings() -> None:
    derive = DEFAULT["default"].derive
    assert derive("a", alert_threshold="80%").alert_threshold == 0.8
    assert derive("a", alert_threshold="0.5").alert_threshold == 0.5
    assert derive("a", alert_threshold=1).alert_threshold == 1.0


def test_unknown_field_suggests_the_right_one() -> None:
    with pytest.raises(
        adm.ConfigError,
        match=(
            r"^x\.timout: unknown key \(did you mean 'timeout'\?\); expected one "
            r"of: concurrency, rate"
        ),
    ):
        DEFAULT["default"].derive("x", timout="1s")


def test_bad_names() -> None:
    with pytest.raises(adm.ConfigError, match="name: expected a non-empty string, got ''"):
        Policy(name="")


def test_overriding_the_default_policy_reaches_every_policy_that_does_not_set_the_field() -> None:
    s = DEFAULT.with_overrides(
        {"default": {"timeout": "45s", "concurrency": 8, "alert_threshold": 0.9}}
    )
    assert s["default"].timeout == s["api"].timeout == s["stress"].timeout == 45.0
    assert s["llm"].timeout == 60.0
    assert s["database"].timeout == 10.0
    assert s["database"].concurrency == 8
    assert s["api"].concurrency == 20
    assert {p.alert_threshold for p in s.values()} == {0.9}
    assert DEFAULT["api"].timeout == 30.0  # DEFAULT itself never changes


def test_changing_a_builtin_keeps_its_parent_and_own_fields() -> None:
    s = DEFAULT.with_overrides({"llm": {"concurrency": 4}})
    assert (s["llm"].parent, s["llm"].concurrency, s["llm"].timeout) == ("api", 4, 60.0)
    assert s["openai"].concurrency == 4  # children follow
    s2 = s.with_overrides({"llm": {"parent": "database"}})
    assert (s2["llm"].concurrency, s2["llm"].timeout) == (4, 60.0)


def test_new_policies_inherit_default_or_their_parent() -> None:
    s = DEFAULT.with_overrides(
        {"batch": {"concurrency": 2}, "cheap-llm": {"parent": "openai", "rate": "10/min"}}
    )
    assert (s["batch"].parent, s["batch"].timeout) == ("default", 30.0)
    assert (s["cheap-llm"].timeout, s["cheap-llm"].rate) == (60.0, Rate(10, 60.0))
    assert "batch" not in DEFAULT


def test_a_policy_may_inherit_one_defined_after_it() -> None:
    s = DEFAULT.with_overrides({"a": {"parent": "b"}, "b": {"concurrency": 3}})
    assert s["a"].concurrency == 3


def test_inheritance_errors() -> None:
    with pytest.raises(
        adm.ConfigError,
        match=(
            r"policies\.x\.parent: expected one of the policies: default, .* got "
            r"'lm' \(did you mean 'llm'\?\)"
        ),
    ):
        DEFAULT.with_overrides({"x": {"parent": "lm"}})
    with pytest.raises(adm.ConfigError, match=r"inheritance cycle: (a -> b -> a|b -> a -> b)"):
        DEFAULT.with_overrides({"a": {"parent": "b"}, "b": {"parent": "a"}})
    with pytest.raises(adm.ConfigError, match=r"policies\.a\.parent: inheritance cycle: a -> a"):
        DEFAULT.with_overrides({"a": {"parent": "a"}})
    with pytest.raises(
        adm.ConfigError, match=r"policies\.default\.parent: the default policy is the root"
    ):
        DEFAULT.with_overrides({"default": {"parent": "api"}})
    with pytest.raises(
        adm.ConfigError, match=r"policies\.x\.parent: expected a policy name, got 3"
    ):
        DEFAULT.with_overrides({"x": {"parent": 3}})
    with pytest.raises(adm.ConfigError, match=r"policies\.x\.rate: expected a rate"):
        DEFAULT.with_overrides({"x": {"rate": "lots"}})


def test_unknown_policy_lookup() -> None:
    with pytest.raises(
        KeyError, match=r"no policy named 'opnai' \(did you mean 'openai'\?\); known: default, api"
    ):
        DEFAULT["opnai"]


def test_table_lists_every_policy() -> None:
    lines = DEFAULT.table().splitlines()
    assert len(lines) == 2 + len(DEFAULT)
    assert "| openai | llm | 20 | 60/min | none | 60s | 0.8 |" in lines
    assert repr(DEFAULT).startswith("PolicySet(default, api")


def test_readme_shows_the_default_table() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    assert DEFAULT.table() in readme
