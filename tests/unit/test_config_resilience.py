"""``[breakers.NAME]`` and ``[retries.NAME]`` in a `ConcurrencyManager`'s configuration
(issue 14): their policies' defaults, errors that name the key, the accessors, and what a
reload does to a breaker's state and a retry's budget.

Time is a `ManualClock` given to the manager: nothing sleeps for real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import admission as adm
from admission.config import Config
from admission.policies import RETRY_DEFAULTS, BreakerPolicy, BudgetPolicy, RetryPolicy
from admission.testing import ManualClock

EXAMPLE = Path(__file__).parents[2] / "examples" / "admission.toml"


class HTTPError(Exception):
    """What an SDK raises for an HTTP error: a ``status_code``, and a hint on 429s."""

    def __init__(self, status_code: int, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code
        self.retry_after = retry_after


def manager(data: dict[str, Any], clock: ManualClock | None = None) -> adm.ConcurrencyManager:
    return adm.ConcurrencyManager.from_dict(data, clock=clock or ManualClock())


# --- defaults and policies -------------------------------------------------------------------


def test_tables_take_their_policy_s_defaults_then_their_own_fields() -> None:
    cfg = Config.from_dict(
        {
            "breakers": {"plain": {}, "db": {"policy": "database", "min_calls": 5}},
            "retries": {
                "plain": {},
                "openai": {"policy": "openai"},  # openai -> llm's retry policy
                "db": {"policy": "database", "attempts": 2, "budget": {"ratio": 0.5}},
            },
        }
    )
    assert cfg.breakers["plain"] == BreakerPolicy()
    assert cfg.breakers["db"] == BreakerPolicy(policy="database", min_calls=5)
    assert cfg.retries["plain"] == RetryPolicy()
    llm = RETRY_DEFAULTS["llm"]
    openai = cfg.retries["openai"]
    assert (openai.policy, openai.attempts, openai.deadline, openai.base, openai.cap) == (
        "openai",
        llm.attempts,
        llm.deadline,
        llm.base,
        llm.cap,
    )
    assert (openai.jitter, openai.budget) == ("full", BudgetPolicy())
    db = cfg.retries["db"]
    assert (db.attempts, db.cap, db.budget) == (2, 2.0, BudgetPolicy(ratio=0.5))


def test_a_user_policy_below_llm_inherits_llm_s_retry_policy() -> None:
    cfg = Config.from_dict(
        {
            "policies": {"summaries": {"parent": "llm", "concurrency": 4}},
            "retries": {"s": {"policy": "summaries"}},
        }
    )
    assert cfg.retries["s"].cap == RETRY_DEFAULTS["llm"].cap
    assert cfg.retries["s"].policy == "summaries"


def test_budget_true_false_none() -> None:
    cfg = Config.from_dict(
        {
            "retries": {
                "on": {"budget": True},
                "off": {"budget": False},
                "none": {"budget": "none"},
            }
        }
    )
    assert cfg.retries["on"].budget == BudgetPolicy()
    assert cfg.retries["off"].budget is None
    assert cfg.retries["none"].budget is None


def test_the_llm_policy_retries_429_and_5xx_with_the_server_s_hint_within_a_budget() -> None:
    clock = ManualClock()
    m = manager({"retries": {"openai": {"policy": "openai"}}}, clock)
    retry = m.retry("openai")
    assert retry.budget is not None
    assert (retry.budget.ratio, retry.budget.min_per_second) == (0.2, 10.0)
    outcomes = [HTTPError(503), HTTPError(429, retry_after=7.0), HTTPError(502)]
    calls: list[float] = []

    def call() -> str:
        calls.append(clock.now())
        if outcomes:
            raise outcomes.pop(0)
        return "ok"

    assert retry.call_blocking(call) == "ok"
    # Full jitter: the first wait is within [0, 1 s); the 429's at least its 7 s hint.
    assert calls[1] - calls[0] < 1.0
    assert calls[2] - calls[1] >= 7.0
    assert len(calls) == 4
    # A 400 is the caller's mistake: raised at once.
    with pytest.raises(HTTPError):
        retry.call_blocking(lambda: (_ for _ in ()).throw(HTTPError(400)))
    assert retry.stats().failed == 1


# --- errors name the key ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        ({"breakers": {"x": {"open_for": "soon"}}}, "breakers.x.open_for", "duration"),
        ({"breakers": {"x": {"open_for": 0}}}, "breakers.x.open_for", "> 0"),
        ({"breakers": {"x": {"window": 1.5}}}, "breakers.x.window", "ambiguous"),
        ({"breakers": {"x": {"window": 0}}}, "breakers.x.window", "integer"),
        ({"breakers": {"x": {"window": "0s"}}}, "breakers.x.window", "> 0"),
        ({"breakers": {"x": {"failure_rate": 2}}}, "breakers.x.failure_rate", "(0, 1]"),
        ({"breakers": {"x": {"half_open_calls": 0}}}, "breakers.x.half_open_calls", "integer"),
        (
            {"breakers": {"x": {"open_for": "1m", "open_for_max": "30s"}}},
            "breakers.x.open_for_max",
            "at least open_for",
        ),
        ({"breakers": {"x": {"open_fr": "1s"}}}, "breakers.x.open_fr", "'open_for'"),
        ({"breakers": {"x": {"budget": True}}}, "breakers.x.budget", "unknown key"),
        ({"breakers": {"x": {"policy": "lm"}}}, "breakers.x.policy", "'llm'"),
        ({"breakers": {"x": "fast"}}, "breakers.x", "expected a table"),
        ({"retries": {"x": {"jitter": "some"}}}, "retries.x.jitter", "full, decorrelated"),
        ({"retries": {"x": {"base": "2s", "cap": "1s"}}}, "retries.x.cap", "at least base"),
        (
            {"retries": {"x": {"attempts": "none", "deadline": "none"}}},
            "retries.x.attempts",
            "forever",
        ),
        ({"retries": {"x": {"attempts": 0}}}, "retries.x.attempts", "integer"),
        ({"retries": {"x": {"deadline": "-1s"}}}, "retries.x.deadline", "duration"),
        ({"retries": {"x": {"budget": 3}}}, "retries.x.budget", "expected a table"),
        ({"retries": {"x": {"budget": {"ratio": -1}}}}, "retries.x.budget.ratio", ">= 0"),
        ({"retries": {"x": {"budget": {"window": "1x"}}}}, "retries.x.budget.window", "duration"),
        ({"retries": {"x": {"budget": {"rate": 1}}}}, "retries.x.budget.rate", "'ratio'"),
        ({"retries": {"x": {"atempts": 3}}}, "retries.x.atempts", "'attempts'"),
        ({"retries": {"x": {"breaker": 3}}}, "retries.x.breaker", "[breakers.NAME]"),
        (
            {"breakers": {"openai": {}}, "retries": {"x": {"breaker": "opena"}}},
            "retries.x.breaker",
            "'openai'",
        ),
    ],
)
def test_bad_values_are_config_errors_naming_the_key(
    data: dict[str, Any], key: str, words: str
) -> None:
    with pytest.raises(adm.ConfigError) as info:
        manager(data)
    assert info.value.key == key, str(info.value)
    assert words in str(info.value)
    assert str(info.value).startswith(f"<dict>: {key}: ")


def test_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "admission.toml"
    path.write_text('[retries.openai]\ncap = "forever"\n')
    with pytest.raises(adm.ConfigError, match=rf"^{path}: retries.openai.cap: expected a dur"):
        adm.ConcurrencyManager.from_file(path)


# --- the accessors ---------------------------------------------------------------------------


def test_accessors_give_the_configured_objects() -> None:
    clock = ManualClock()
    m = manager(
        {
            "breakers": {"openai": {"window": "60s", "min_calls": 2, "open_for": "10s"}},
            "retries": {"openai": {"policy": "llm", "breaker": "openai"}, "plain": {}},
        },
        clock,
    )
    breaker = m.breaker("openai")
    assert isinstance(breaker, adm.CircuitBreaker)
    assert (breaker.name, breaker.window, breaker.min_calls, breaker.open_for) == (
        "openai",
        60.0,
        2,
        10.0,
    )
    assert breaker.clock is clock
    retry = m.retry("openai")
    assert (retry.name, retry.breaker, retry.attempts) == ("openai", breaker, 5)
    assert m.retry("plain").breaker is None
    assert m.retry("plain").budget is not m.retry("openai").budget  # one budget per table
    with pytest.raises(adm.UnknownLimit, match=r"no breaker named 'opena' \(did you mean"):
        m.breaker("opena")
    with pytest.raises(adm.UnknownLimit, match=r"no retry named 'x'; known: openai, plain"):
        m.retry("x")
    empty = manager({})
    with pytest.raises(adm.UnknownLimit, match=r"known: none \(<dict> has no \[breakers"):
        empty.breaker("openai")


def test_a_configured_retry_never_calls_through_its_open_breaker() -> None:
    clock = ManualClock()
    m = manager(
        {
            "breakers": {"dep": {"window": 4, "min_calls": 2, "open_for": "1h"}},
            "retries": {"dep": {"breaker": "dep", "attempts": 10, "deadline": "1m"}},
        },
        clock,
    )
    calls = 0

    def down() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("down")

    with pytest.raises(adm.CircuitOpen):  # open for an hour: past the deadline, gives up
        m.retry("dep").call_blocking(down)
    assert calls == 2
    assert m.breaker("dep").state == "open"


def test_the_shipped_example_has_a_breaker_and_a_retry_using_it() -> None:
    m = adm.ConcurrencyManager.from_file(EXAMPLE, env=False)
    assert m.retry("openai").breaker is m.breaker("openai")
    assert m.config.retries["openai"].policy == "openai"
    assert m.breaker("openai").window == 60.0


# --- reloads ---------------------------------------------------------------------------------

BREAKER = {"window": 4, "min_calls": 2, "open_for": "30s"}


def trip(breaker: adm.CircuitBreaker) -> None:
    for _ in range(2):
        with pytest.raises(ConnectionError), breaker:
            raise ConnectionError("down")
    assert breaker.state == "open"


def test_a_reload_keeps_an_unchanged_breaker_with_its_state() -> None:
    m = manager({"breakers": {"dep": BREAKER}, "retries": {"dep": {"breaker": "dep"}}})
    breaker, retry = m.breaker("dep"), m.retry("dep")
    trip(breaker)
    m.reload({"breakers": {"dep": BREAKER}, "retries": {"dep": {"breaker": "dep"}}})
    assert m.breaker("dep") is breaker
    assert breaker.state == "open"
    assert m.retry("dep") is retry


def test_a_reload_changing_a_breaker_s_thresholds_replaces_it_closed() -> None:
    clock = ManualClock()
    config: dict[str, Any] = {
        "breakers": {"dep": BREAKER},
        "retries": {"dep": {"breaker": "dep"}, "other": {}},
    }
    m = manager(config, clock)
    old, old_retry, other = m.breaker("dep"), m.retry("dep"), m.retry("other")
    trip(old)
    config["breakers"] = {"dep": {**BREAKER, "min_calls": 3}}
    m.reload(config)
    new = m.breaker("dep")
    assert new is not old
    assert (new.state, new.min_calls, new.stats().window_calls) == ("closed", 3, 0)
    # The old one is left as it was, for code that kept it.
    assert (old.state, old.min_calls) == ("open", 2)
    # The retry that uses it is rebuilt around the new breaker; its budget goes on.
    assert m.retry("dep") is not old_retry
    assert m.retry("dep").breaker is new
    assert m.retry("dep").budget is old_retry.budget
    assert m.retry("other") is other  # nothing of its changed


def test_a_reload_changing_a_retry_keeps_its_budget_unless_the_budget_changed() -> None:
    m = manager({"retries": {"r": {"attempts": 3}}})
    first = m.retry("r")
    m.reload({"retries": {"r": {"attempts": 4}}})
    second = m.retry("r")
    assert (second is not first, second.attempts, second.budget) == (True, 4, first.budget)
    m.reload({"retries": {"r": {"attempts": 4, "budget": {"ratio": 0.1}}}})
    third = m.retry("r")
    assert third.budget is not None
    assert third.budget is not first.budget
    assert third.budget.ratio == 0.1


def test_a_reload_removing_a_table_removes_its_object() -> None:
    m = manager({"breakers": {"dep": BREAKER}, "retries": {"dep": {}}})
    m.reload({})
    with pytest.raises(adm.UnknownLimit):
        m.breaker("dep")
    with pytest.raises(adm.UnknownLimit):
        m.retry("dep")


def test_a_refused_reload_changes_nothing() -> None:
    m = manager({"breakers": {"dep": BREAKER}, "retries": {"dep": {"breaker": "dep"}}})
    breaker, retry = m.breaker("dep"), m.retry("dep")
    trip(breaker)
    bad = {
        "breakers": {"dep": {**BREAKER, "min_calls": 3}},
        "retries": {"dep": {"breaker": "gone"}},  # refused after the breakers were prepared
    }
    with pytest.raises(adm.ConfigError, match=r"retries.dep.breaker: no \[breakers.gone\]"):
        m.reload(bad)
    assert m.breaker("dep") is breaker
    assert m.retry("dep") is retry
    assert (breaker.state, breaker.min_calls) == ("open", 2)
    # And the next good reload starts from what is in force, not from the refused one.
    m.reload({"breakers": {"dep": BREAKER}, "retries": {"dep": {"breaker": "dep"}}})
    assert m.breaker("dep") is breaker


def test_a_reload_can_add_breakers_and_retries() -> None:
    m = manager({})
    m.reload({"breakers": {"dep": BREAKER}, "retries": {"dep": {"breaker": "dep"}}})
    assert m.retry("dep").breaker is m.breaker("dep")
