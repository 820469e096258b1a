"""``# noqa`` comments: which lines suppress which codes.

``# noqa`` alone suppresses every finding on its line; ``# noqa: ADM101, ADM2`` those codes
and prefixes (``ADM2`` covers ADM201-ADM203; ``ADM`` all). Text after the codes is free (a
reason: ``# noqa: ADM302  joined in close()``). Only real comments count: the file is
tokenized, so a ``# noqa`` inside a string suppresses nothing. Codes of other tools in the
same comment (``# noqa: E501, ADM101``) are fine; the comment applies to the line it is on,
and a finding is on the first line of the node it reports.
"""

from __future__ import annotations

import io
import re
import tokenize

__all__ = ["Suppressions", "suppressions"]

_NOQA = re.compile(
    r"#\s*(?i:noqa)\b(?P<colon>\s*:\s*(?P<codes>[A-Z]+[0-9]*(?:[\s,]+[A-Z]+[0-9]*)*))?"
)
_QUICK = re.compile(r"(?i:noqa)")

# line -> codes suppressed there (an empty tuple: every code)
Suppressions = dict[int, tuple[str, ...]]


def _parse(comment: str) -> tuple[str, ...] | None:
    match = _NOQA.search(comment)
    if match is None:
        return None
    codes = match.group("codes")
    if not codes:
        return ()
    return tuple(c for c in re.split(r"[\s,]+", codes) if c)


def suppressions(source: str) -> Suppressions:
    """The ``# noqa`` comments of a file, by line.

    >>> suppressions("x = 1  # noqa: ADM101,ADM2 reason\\ny = 2  # noqa\\n")
    {1: ('ADM101', 'ADM2'), 2: ()}
    """
    if _QUICK.search(source) is None:
        return {}
    found: Suppressions = {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                codes = _parse(token.string)
                if codes is not None:
                    found[token.start[0]] = codes
    except (tokenize.TokenError, SyntaxError):
        # the parser accepted the file, so this is the tokenizer's own limit; keep what was read
        pass
    return found


def suppressed(code: str, line: int, table: Suppressions) -> bool:
    """Whether ``code`` is suppressed on ``line``."""
    codes = table.get(line)
    if codes is None:
        return False
    return not codes or any(code.startswith(c) for c in codes)
