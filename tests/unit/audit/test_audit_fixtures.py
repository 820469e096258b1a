"""Every rule against its fixtures: each marked line reported, nothing else (100 % recall,
no false positive), and at least 8 positive and 8 negative cases per rule."""

from __future__ import annotations

from collections import Counter

import pytest
from fixture_cases import FixtureFile, fixture_files

from admission.audit import RULES, Settings, audit_source

FILES = fixture_files()


def _settings(fixture: FixtureFile) -> Settings:
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in fixture.settings.items()}
    return Settings(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("fixture", FILES, ids=[f.path.name for f in FILES])
def test_fixture_findings_are_exactly_the_marked_lines(fixture: FixtureFile) -> None:
    findings, failures = audit_source(
        fixture.source,
        fixture.path.name,
        _settings(fixture),
        relative_path=fixture.relative_path,
    )
    assert failures == []
    found = {(f.line, f.code) for f in findings}
    missed = sorted(fixture.expected - found)
    extra = sorted(found - fixture.expected)
    assert (missed, extra) == ([], []), f"missed (line, code): {missed}; unexpected: {extra}"


@pytest.mark.parametrize("fixture", FILES, ids=[f.path.name for f in FILES])
def test_good_cases_have_no_finding(fixture: FixtureFile) -> None:
    findings, _ = audit_source(
        fixture.source,
        fixture.path.name,
        _settings(fixture),
        relative_path=fixture.relative_path,
    )
    for name, first, last in fixture.good_ranges:
        inside = [f"{f.line}: {f.code}" for f in findings if first <= f.line <= last]
        assert inside == [], f"{name} should have no finding"


def _counts() -> tuple[Counter[str], Counter[str]]:
    positives: Counter[str] = Counter()
    negatives: Counter[str] = Counter()
    for fixture in FILES:
        for _, code in fixture.expected:
            if code == fixture.rule:
                positives[code] += 1
        negatives[fixture.rule] += len(fixture.good_ranges)
    return positives, negatives


@pytest.mark.parametrize("rule", [r.code for r in RULES if r.code != "ADM000"])
def test_each_rule_has_eight_positive_and_eight_negative_cases(rule: str) -> None:
    positives, negatives = _counts()
    assert positives[rule] >= 8, f"{rule}: {positives[rule]} positive cases"
    assert negatives[rule] >= 8, f"{rule}: {negatives[rule]} negative cases"
