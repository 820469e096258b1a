"""``admission audit python tests examples`` on this repository: nothing found, and every
suppression says why (the rules' fixtures are excluded by ``[tool.admission.audit]``)."""

from __future__ import annotations

import re
from pathlib import Path

from admission.audit import audit_paths, load_settings

ROOT = Path(__file__).resolve().parents[3]
AUDITED = [ROOT / "python", ROOT / "tests", ROOT / "examples"]
_SUPPRESSION = re.compile(r"#\s*noqa:[^#\n]*\bADM[0-9]*")


def test_this_repository_audits_clean() -> None:
    settings = load_settings(ROOT / "pyproject.toml")
    result = audit_paths(AUDITED, settings)
    assert result.parse_failures == []
    assert [f"{f.path}:{f.line}: {f.code}" for f in result.findings] == []
    assert result.io_errors == []
    assert result.internal_errors == []
    # the fixtures are code written to be found: excluded by the configuration, not skipped
    # because nothing was read
    assert not any("audit/fixtures/" in f for f in result.files)
    assert len(result.files) > 50


def test_every_suppression_in_the_repository_gives_a_reason() -> None:
    settings = load_settings(ROOT / "pyproject.toml")
    unexplained = []
    for path in audit_paths(AUDITED, settings).files:
        lines = (Path(path) if Path(path).is_absolute() else ROOT / path).read_text().splitlines()
        for number, line in enumerate(lines, 1):
            if not _SUPPRESSION.search(line) or "_SUPPRESSION" in line:
                continue
            # the reason: text after the codes, or a comment on the line above
            after = _SUPPRESSION.sub("", line.partition("#")[2]).strip(" -:")
            above = lines[number - 2].strip() if number > 1 else ""
            if not after and not above.startswith("#"):
                unexplained.append(f"{path}:{number}")
    assert unexplained == []
