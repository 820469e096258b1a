"""What the audit reports: findings (a rule fired), their fixes, and files that did not parse.

Plain frozen records, ordered so that any two runs over the same code list them identically.
Lines and columns are 1-based; columns count characters (code points), not bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Edit", "Finding", "Fix", "ParseFailure"]


@dataclass(frozen=True, order=True)
class Edit:
    """Replace the text from (line, column) up to (end_line, end_column) with ``content``."""

    line: int
    column: int
    end_line: int
    end_column: int
    content: str


@dataclass(frozen=True, order=True)
class Fix:
    """A safe rewrite that resolves a finding (``asyncio.get_running_loop()`` for ADM501)."""

    message: str
    edits: tuple[Edit, ...]


@dataclass(frozen=True, order=True)
class Finding:
    """One rule firing at one place.

    >>> f = Finding("app.py", 3, 5, 3, 25, "ADM201", "`time.sleep` blocks the event loop")
    >>> f"{f.path}:{f.line}:{f.column}: {f.code}"
    'app.py:3:5: ADM201'
    """

    path: str
    line: int
    column: int
    end_line: int
    end_column: int
    code: str
    message: str
    # "error" or "warning": the rule's default, raised to "error" where a case is worse
    # (a daemon thread that is never joined)
    severity: str = "warning"
    fix: Fix | None = field(default=None, compare=False)
    # stable across runs and line moves: rule, path, the line's text, and which occurrence
    # of that text it is (SARIF partialFingerprints, JSON)
    fingerprint: str = field(default="", compare=False)


@dataclass(frozen=True, order=True)
class ParseFailure:
    """A file that could not be read as Python (reported as ADM000; the run goes on).

    >>> ParseFailure("bad.py", 1, 9, "invalid syntax").message
    'invalid syntax'
    """

    path: str
    line: int
    column: int
    message: str
