"""The rule pages (``docs/audit/ADMxxx.md``): one per rule, and their examples tell the truth:
the "Bad" code is reported with the page's code, the "Good" code with nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from admission.audit import RULES, Settings, audit_source

DOCS = Path(__file__).resolve().parents[3] / "docs" / "audit"
_BLOCK = re.compile(r"^## (Bad|Good)\n+```python\n(.*?)^```", re.S | re.M)
_SETTINGS = re.compile(r"<!-- settings: (.*?) -->")


def _page(code: str) -> tuple[str, dict[str, str], Settings]:
    text = (DOCS / f"{code}.md").read_text(encoding="utf-8")
    blocks = {kind: body for kind, body in _BLOCK.findall(text)}
    match = _SETTINGS.search(text)
    values = json.loads(match.group(1)) if match else {}
    settings = Settings(**{k: tuple(v) for k, v in values.items()})
    return text, blocks, settings


def test_one_page_per_rule() -> None:
    assert sorted(p.stem for p in DOCS.glob("ADM*.md")) == sorted(r.code for r in RULES)


@pytest.mark.parametrize("rule", RULES, ids=[r.code for r in RULES])
def test_page_title_and_examples(rule: object) -> None:
    code, name = rule.code, rule.name  # type: ignore[attr-defined]
    text, blocks, settings = _page(code)
    assert text.startswith(f"# {code} {name}")
    assert set(blocks) == {"Bad", "Good"}
    bad_findings, bad_failures = audit_source(blocks["Bad"], f"{code}_bad.py", settings)
    if code == "ADM000":
        assert [f.message.split(":")[0] for f in bad_failures] == ["syntax error"]
    else:
        assert bad_failures == []
        assert {f.code for f in bad_findings} == {code}
    assert audit_source(blocks["Good"], f"{code}_good.py", settings) == ([], [])
