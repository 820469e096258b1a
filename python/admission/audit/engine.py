"""Running the audit: one source text, one file, or a tree of files.

Owns reading (encoding, parse failures as ADM000), the order of the results (by path, line,
column, code: the same for every run), suppression (``# noqa``, ``per-file-ignores``) and
file discovery (``exclude``). It never stops at a bad file: each one is reported and the run
goes on.
"""

from __future__ import annotations

import ast
import gc
import hashlib
import io
import os
import sys
import threading
import tokenize
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from admission.audit.checks import Context, interesting_names, run_checks
from admission.audit.config import Settings
from admission.audit.findings import Finding, ParseFailure
from admission.audit.names import Imports
from admission.audit.noqa import suppressed, suppressions
from admission.audit.walk import walk

__all__ = ["AuditResult", "audit_paths", "audit_source", "discover"]


@dataclass
class AuditResult:
    """What a run found, in a fixed order."""

    findings: list[Finding] = field(default_factory=list)
    parse_failures: list[ParseFailure] = field(default_factory=list)
    # files read and parsed (or attempted), in the order checked
    files: list[str] = field(default_factory=list)
    # paths that could not be read, with why (exit status 2)
    io_errors: list[str] = field(default_factory=list)
    # crashes of the audit itself, with the traceback (exit status 3)
    internal_errors: list[str] = field(default_factory=list)


def _decode(data: bytes) -> str:
    """Source bytes as text: UTF-8 (a BOM dropped), or the encoding of a PEP 263 cookie."""
    if b"coding" in data[:400]:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        return data.decode(encoding)
    return data.decode("utf-8").removeprefix("\ufeff")


def _module_name(path: str) -> str:
    """A dotted module name for relative imports (``pkg/sub/mod.py`` -> ``pkg.sub.mod``)."""
    parts = Path(path).with_suffix("").parts
    return ".".join(p for p in parts if p not in (".", "..", "/"))


def audit_source(
    source: str | bytes,
    path: str = "<string>",
    settings: Settings | None = None,
    *,
    relative_path: str | None = None,
) -> tuple[list[Finding], list[ParseFailure]]:
    """Audit one file's text: its findings (sorted, suppressions applied) and, if it does not
    parse, the ADM000 failure instead.

    ``path`` is how the file is named in the results; ``relative_path`` (default: ``path``)
    is its path from the settings' root, which ``per-file-ignores`` globs are matched to and
    which tells test files from library code (ADM302's evidence reading).

    >>> code = "import time\\nasync def f():\\n    time.sleep(1)\\n"
    >>> findings, failures = audit_source(code, "app.py")
    >>> [(f.line, f.column, f.code) for f in findings], failures
    ([(3, 5, 'ADM201')], [])
    """
    settings = settings or Settings()
    try:
        text = _decode(source) if isinstance(source, bytes) else source
    except (UnicodeError, LookupError, SyntaxError) as exc:
        return [], [ParseFailure(path, 1, 1, f"cannot decode the file: {exc}")]
    try:
        return _audit_text(text, path, settings, relative_path)
    except RecursionError:
        # Valid code nested deeper than the interpreter's recursion limit (a function of
        # thousands of `elif`s, a sum of 50,000 terms): parsed and checked again on a
        # thread whose stack and limit are made for it.
        return _deep(lambda: _audit_text(text, path, settings, relative_path), path)


def _audit_text(
    text: str, path: str, settings: Settings, relative_path: str | None
) -> tuple[list[Finding], list[ParseFailure]]:
    try:
        tree = ast.parse(text, path)
    except SyntaxError as exc:
        line = exc.lineno or 1
        column = exc.offset or 1
        return [], [ParseFailure(path, line, column, f"syntax error: {exc.msg}")]
    except ValueError as exc:  # null bytes
        return [], [ParseFailure(path, 1, 1, f"cannot parse: {exc}")]
    except MemoryError as exc:
        # CPython's parser stops at a fixed depth of nested rules (about 6,000 `elif`s):
        # Python itself cannot compile the file either
        why = str(exc) or "the file is nested deeper than this Python's parser allows"
        return [], [ParseFailure(path, 1, 1, f"cannot parse: {why}")]
    lines = text.splitlines()
    imports = Imports(_module_name(path))
    facts = walk(tree, imports, interesting_names(settings.guarded_calls))
    ctx = Context(facts, settings, path, lines, relative_path)
    run_checks(ctx)
    findings = ctx.findings
    if findings:
        table = suppressions(text)
        ignored = settings.ignored_in(relative_path or path)
        findings = [
            f
            for f in findings
            if not suppressed(f.code, f.line, table)
            and not any(f.code.startswith(code) for code in ignored)
        ]
    findings.sort()
    return _fingerprinted(findings, relative_path or path, lines), []


# The deep route's thread stack and recursion limit. The limit counts Python frames (the walk
# takes about two per level of nesting) and, on 3.11, bounds the C recursion that turns the
# parse into `ast` objects (three levels per unit, under 100 bytes each); the stack is sized
# so that neither can overflow it before the limit is reached. Only the touched part of the
# stack is ever allocated.
_DEEP_STACK = 512 * 1024 * 1024
_DEEP_LIMIT = 250_000
# sys.setrecursionlimit is the interpreter's: one deep file at a time raises and restores it
_deep_lock = threading.Lock()

_Outcome = tuple[list[Finding], list[ParseFailure]]


def _deep(audit: Callable[[], _Outcome], path: str) -> _Outcome:
    """Run ``audit`` on a thread with a large stack and a raised recursion limit.

    Where the interpreter fixes the limit of `ast` construction in C (3.12 and 3.13: about
    3,000 and 10,000 levels of nesting), or beyond ``_DEEP_LIMIT``, the file is reported as
    ADM000, as before.
    """
    outcome: list[_Outcome] = []
    # what went wrong, as text: an exception kept whole would hold the frames of the walk,
    # and through them the tree, whose release takes the C stack in proportion to its depth
    # (`ast` nodes have no trashcan): it must be released on this thread, not the caller's
    failure: list[str] = []
    too_deep: list[str] = []

    def run() -> None:
        try:
            outcome.append(audit())
        except RecursionError as exc:
            too_deep.append(str(exc))
        except Exception:  # a bug of the audit: the caller reports it with this traceback
            failure.append(traceback.format_exc())

    with _deep_lock:
        limit = sys.getrecursionlimit()
        size = threading.stack_size()
        sys.setrecursionlimit(max(limit, _DEEP_LIMIT))
        try:
            # the size applies to threads started while it is set
            threading.stack_size(_DEEP_STACK)
            try:
                worker = threading.Thread(target=run, name="admission-audit-deep")
                worker.start()
            finally:
                threading.stack_size(size)
            worker.join()
        finally:
            sys.setrecursionlimit(limit)
    if too_deep:
        why = f"nested too deeply for this Python's ast module ({too_deep[0]})"
        return [], [ParseFailure(path, 1, 1, f"cannot parse: {why}")]
    if failure:
        raise RuntimeError(f"auditing a deeply nested file failed:\n{failure[0]}")
    return outcome[0]


def _fingerprinted(findings: list[Finding], path: str, lines: list[str]) -> list[Finding]:
    """The findings with their fingerprints (see `Finding.fingerprint`)."""
    seen: Counter[tuple[str, str]] = Counter()
    stamped = []
    for finding in findings:
        text = " ".join(lines[finding.line - 1].split()) if finding.line <= len(lines) else ""
        occurrence = seen[(finding.code, text)]
        seen[(finding.code, text)] += 1
        key = "\0".join((finding.code, path, text, str(occurrence)))
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        stamped.append(replace(finding, fingerprint=digest))
    return stamped


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def _display(path: Path) -> str:
    """How a path is shown: relative to the current directory when under it."""
    if path.is_absolute():
        try:
            return path.relative_to(Path.cwd()).as_posix()
        except ValueError:
            return path.as_posix()
    return path.as_posix()


def discover(paths: Iterable[Path], settings: Settings, errors: list[str]) -> Iterator[Path]:
    """The Python files under ``paths`` that are not excluded, each once, in a stable order.

    A file named explicitly is audited whatever its suffix (unless excluded); directories
    are searched for ``*.py``. A path that does not exist goes to ``errors``.
    """
    seen: set[Path] = set()
    root = settings.root
    for path in paths:
        if not path.exists():
            errors.append(f"{_display(path)}: no such file or directory")
            continue
        if settings.excluded(_relative(path, root)) and path.resolve() != root:
            continue
        if path.is_file():
            resolved = path.resolve()
            if resolved not in seen:
                seen.add(resolved)
                yield path
            continue
        for directory, subdirectories, files in os.walk(path):
            here = Path(directory)
            subdirectories[:] = sorted(
                d for d in subdirectories if not settings.excluded(_relative(here / d, root))
            )
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                file = here / name
                if settings.excluded(_relative(file, root)):
                    continue
                resolved = file.resolve()
                if resolved not in seen:
                    seen.add(resolved)
                    yield file


def audit_paths(paths: Iterable[Path], settings: Settings | None = None) -> AuditResult:
    """Audit every Python file under ``paths``; nothing stops the run but the end of it."""
    # Syntax trees and the facts built on them hold no reference cycles: reference counting
    # frees each file's as soon as it is done, and the cycle collector's passes over millions
    # of fresh nodes would only cost time (about a sixth of the run).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _audit_paths(paths, settings or Settings())
    finally:
        if collecting:
            gc.enable()


def _audit_paths(paths: Iterable[Path], settings: Settings) -> AuditResult:
    result = AuditResult()
    for file in discover(paths, settings, result.io_errors):
        shown = _display(file)
        result.files.append(shown)
        try:
            data = file.read_bytes()
        except OSError as exc:
            result.io_errors.append(f"{shown}: cannot read: {exc.strerror or exc}")
            continue
        try:
            findings, failures = audit_source(
                data, shown, settings, relative_path=_relative(file, settings.root)
            )
        except Exception:  # a bug of the audit: say where, and go on with the other files
            result.internal_errors.append(f"{shown}: {traceback.format_exc()}")
            continue
        result.findings.extend(findings)
        if settings.enabled("ADM000"):
            result.parse_failures.extend(failures)
    result.findings.sort()
    result.parse_failures.sort()
    return result
