"""Reading the rule fixtures: ``fixtures/admNNN*.py`` files, their cases and expectations.

A fixture file is Python that is read, never run. Markers:

- ``# expect: ADM101`` at the end of a line: the audit must report ADM101 on that line (a
  positive case). Every finding in a fixture file must have its marker, and every marker its
  finding: 100 % recall, no false positive.
- a top-level ``def``/``async def``/``class`` named ``good_*``/``Good*`` (or a method named
  ``good_*``) is a negative case: nothing may be reported inside it.
- ``# settings: {...}`` on one of the first lines: JSON of `Settings` fields for that file.
- ``# path: tests/test_app.py`` on one of the first lines: the path the file is read at (from
  the project's root: a test file's readings differ from library code's); default its name.
- a file named ``admNNN_good_*.py`` is one negative case as a whole (module-level code).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
_EXPECT = re.compile(r"#\s*expect:\s*((?:ADM[0-9]{3}[,\s]*)+)")


@dataclass
class FixtureFile:
    path: Path
    rule: str  # the rule the file is about (from its name)
    source: str
    settings: dict[str, object]
    relative_path: str  # where the file is read as sitting in the project
    expected: set[tuple[int, str]]  # (line, code)
    good_ranges: list[tuple[str, int, int]]  # (name, first line, last line)


def load(path: Path) -> FixtureFile:
    source = path.read_text(encoding="utf-8")
    settings: dict[str, object] = {}
    relative_path = path.name
    expected: set[tuple[int, str]] = set()
    for number, line in enumerate(source.splitlines(), 1):
        if line.startswith("# settings:"):
            settings = json.loads(line.partition(":")[2])
        if line.startswith("# path:"):
            relative_path = line.partition(":")[2].strip()
        match = _EXPECT.search(line)
        if match:
            for code in re.findall(r"ADM[0-9]{3}", match.group(1)):
                expected.add((number, code))
    good: list[tuple[str, int, int]] = []
    tree = ast.parse(source)
    if "_good_" in path.stem:
        good.append((path.stem, 1, len(source.splitlines())))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and (
            node.name.startswith(("good_", "Good"))
        ):
            good.append((node.name, node.lineno, node.end_lineno or node.lineno))
    rule = "ADM" + path.stem[3:6]
    return FixtureFile(path, rule, source, settings, relative_path, expected, good)


def fixture_files() -> list[FixtureFile]:
    return [load(p) for p in sorted(FIXTURES.glob("adm*.py"))]
