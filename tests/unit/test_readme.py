"""The README's ``pycon`` examples run as doctests, section by section, as written."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

README = Path(__file__).parents[2] / "README.md"
_BLOCK = re.compile(r"^```pycon\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _sections() -> dict[str, tuple[str, int]]:
    """``{section title: (its pycon blocks joined, line of its first block)}``."""
    text = README.read_text(encoding="utf-8")
    found: dict[str, tuple[str, int]] = {}
    for part in re.split(r"^(?=## )", text, flags=re.MULTILINE):
        blocks = list(_BLOCK.finditer(part))
        if part.startswith("## ") and blocks:
            title = part.splitlines()[0][3:]
            line = text.count("\n", 0, text.index(part) + blocks[0].start()) + 2
            found[title] = ("\n".join(b.group(1) for b in blocks), line)
    return found


SECTIONS = _sections()


def test_the_retries_section_has_examples() -> None:
    assert "Retries" in SECTIONS


@pytest.mark.parametrize("title", sorted(SECTIONS))
def test_readme_examples(title: str) -> None:
    source, line = SECTIONS[title]
    test = doctest.DocTestParser().get_doctest(source, {}, f"README: {title}", str(README), line)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    failures: list[str] = []

    def report(out: str) -> None:
        failures.append(out)

    runner.run(test, out=report)
    assert runner.failures == 0, "".join(failures)
    assert runner.tries > 0
