"""The audit's output formats: text (ruff's concise style), JSON, SARIF 2.1.0, GitHub
annotations, and the per-rule statistics.

Each renderer turns one `AuditResult` into one string; none reads files or decides anything
about the code. The JSON format is versioned (``"version": 1``; its JSON Schema is
``schema/audit-report-1.json`` in this package): fields are only ever added within a version.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from admission.audit.engine import AuditResult
from admission.audit.findings import Finding, ParseFailure
from admission.audit.rules import DOCS_URL, RULES, rule

__all__ = ["FORMATS", "JSON_VERSION", "render", "statistics", "tool_version"]

FORMATS = ("text", "json", "sarif", "github")
JSON_VERSION = 1
TOOL = "admission-audit"
# The key of our own SARIF fingerprint (GitHub computes its primaryLocationLineHash itself).
FINGERPRINT_KEY = "admissionAudit/v1"


def tool_version() -> str:
    """The installed admission version (``unknown`` when run from a bare source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("admission")
    except PackageNotFoundError:
        return "unknown"


def _count(number: int, word: str) -> str:
    return f"{number} {word}{'' if number == 1 else 's'}"


def _text(result: AuditResult) -> str:
    lines = [f"{f.path}:{f.line}:{f.column}: {f.code} {f.message}" for f in _merged(result)]
    problems = len(result.findings) + len(result.parse_failures)
    if problems:
        files = len({f.path for f in result.findings} | {p.path for p in result.parse_failures})
        summary = f"Found {_count(problems, 'finding')} in {_count(files, 'file')}."
        if result.parse_failures:
            summary += f" ({_count(len(result.parse_failures), 'file')} could not be parsed.)"
        lines.append(summary)
    else:
        lines.append("All checks passed!")
    return "\n".join(lines) + "\n"


def _merged(result: AuditResult) -> list[Finding]:
    """Findings and parse failures (as ADM000 findings) in one sorted list."""
    failures = [
        Finding(p.path, p.line, p.column, p.line, p.column, "ADM000", p.message, "error")
        for p in result.parse_failures
    ]
    return sorted([*result.findings, *failures])


def statistics(result: AuditResult) -> str:
    """Findings per rule, most frequent first (``--statistics``)."""
    counts = Counter(f.code for f in _merged(result))
    rows = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    width = max((len(str(n)) for _, n in rows), default=1)
    lines = [f"{n:>{width}}\t{code}\t{rule(code).name}" for code, n in rows]
    return "\n".join(lines) + "\n" if lines else "All checks passed!\n"


def _finding_json(f: Finding) -> dict[str, object]:
    fix: dict[str, object] | None = None
    if f.fix is not None:
        fix = {
            "message": f.fix.message,
            "edits": [
                {
                    "line": e.line,
                    "column": e.column,
                    "end_line": e.end_line,
                    "end_column": e.end_column,
                    "content": e.content,
                }
                for e in f.fix.edits
            ],
        }
    return {
        "code": f.code,
        "name": rule(f.code).name,
        "message": f.message,
        "severity": f.severity,
        "path": f.path,
        "line": f.line,
        "column": f.column,
        "end_line": f.end_line,
        "end_column": f.end_column,
        "fingerprint": f.fingerprint,
        "fix": fix,
    }


def _json(result: AuditResult) -> str:
    counts = Counter(f.code for f in _merged(result))
    document = {
        "version": JSON_VERSION,
        "tool": {"name": TOOL, "version": tool_version()},
        "findings": [_finding_json(f) for f in result.findings],
        "parse_errors": [
            {
                "code": "ADM000",
                "path": p.path,
                "line": p.line,
                "column": p.column,
                "message": p.message,
            }
            for p in result.parse_failures
        ],
        "errors": [*result.io_errors, *result.internal_errors],
        "summary": {
            "files": len(result.files),
            "findings": len(result.findings),
            "parse_errors": len(result.parse_failures),
            "by_code": dict(sorted(counts.items())),
        },
    }
    return json.dumps(document, indent=2) + "\n"


def _artifact(path: str) -> dict[str, str]:
    """A SARIF artifact location: relative to %SRCROOT% (the current directory) when the
    path is relative, else an absolute file URI."""
    posix = PurePosixPath(Path(path).as_posix())
    if posix.is_absolute():
        return {"uri": Path(path).as_uri()}
    return {"uri": quote(str(posix)), "uriBaseId": "%SRCROOT%"}


def _region(line: int, column: int, end_line: int, end_column: int) -> dict[str, int]:
    return {
        "startLine": line,
        "startColumn": column,
        "endLine": end_line,
        "endColumn": max(end_column, column if end_line == line else 1),
    }


def _sarif_result(f: Finding, index: dict[str, int]) -> dict[str, object]:
    location = {
        "physicalLocation": {
            "artifactLocation": _artifact(f.path),
            "region": _region(f.line, f.column, f.end_line, f.end_column),
        }
    }
    result: dict[str, object] = {
        "ruleId": f.code,
        "ruleIndex": index[f.code],
        "level": f.severity,
        "message": {"text": f.message},
        "locations": [location],
        "partialFingerprints": {FINGERPRINT_KEY: f.fingerprint},
    }
    if f.fix is not None:
        result["fixes"] = [
            {
                "description": {"text": f.fix.message},
                "artifactChanges": [
                    {
                        "artifactLocation": _artifact(f.path),
                        "replacements": [
                            {
                                "deletedRegion": _region(
                                    e.line, e.column, e.end_line, e.end_column
                                ),
                                "insertedContent": {"text": e.content},
                            }
                            for e in f.fix.edits
                        ],
                    }
                ],
            }
        ]
    return result


def _sarif_rule(code: str) -> dict[str, object]:
    r = rule(code)
    descriptor: dict[str, object] = {
        "id": r.code,
        "name": "".join(part.title() for part in r.name.split("-")),
        "shortDescription": {"text": r.summary},
        "fullDescription": {"text": r.help},
        "help": {"text": r.help, "markdown": f"**{r.code}** {r.summary}\n\n{r.help}"},
        "defaultConfiguration": {"level": r.severity, "enabled": not r.opt_in},
        "properties": {"tags": ["admission", "concurrency"]},
    }
    if DOCS_URL is not None:
        descriptor["helpUri"] = DOCS_URL.format(code=r.code)
    return descriptor


def _notification(p: ParseFailure) -> dict[str, object]:
    return {
        "level": "error",
        "message": {"text": f"{p.path} was not checked: {p.message}"},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": _artifact(p.path),
                    "region": _region(p.line, p.column, p.line, p.column),
                }
            }
        ],
        "descriptor": {"id": "ADM000", "index": 0},
    }


def _sarif(result: AuditResult) -> str:
    codes = [r.code for r in RULES if r.code != "ADM000"]
    index = {code: i for i, code in enumerate(codes)}
    notifications = [_notification(p) for p in result.parse_failures]
    notifications += [
        {"level": "error", "message": {"text": text}}
        for text in [*result.io_errors, *result.internal_errors]
    ]
    root = Path.cwd().as_uri() + "/"
    document = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": TOOL,
                        "version": tool_version(),
                        "rules": [_sarif_rule(code) for code in codes],
                        "notifications": [_sarif_rule("ADM000")],
                    }
                },
                "invocations": [
                    {
                        "executionSuccessful": not result.internal_errors and not result.io_errors,
                        "toolExecutionNotifications": notifications,
                    }
                ],
                "originalUriBaseIds": {"%SRCROOT%": {"uri": root}},
                "columnKind": "unicodeCodePoints",
                "results": [_sarif_result(f, index) for f in result.findings],
            }
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _github(result: AuditResult) -> str:
    lines = []
    for f in _merged(result):
        level = "error" if f.severity == "error" else "warning"
        properties = ",".join(
            [
                f"file={_escape_property(f.path)}",
                f"line={f.line}",
                f"endLine={f.end_line}",
                f"col={f.column}",
                f"endColumn={f.end_column}",
                f"title={_escape_property(f'{f.code} {rule(f.code).name}')}",
            ]
        )
        lines.append(f"::{level} {properties}::{_escape_data(f'{f.code} {f.message}')}")
    return "\n".join(lines) + "\n" if lines else ""


def render(result: AuditResult, output_format: str) -> str:
    """The result in one of `FORMATS`."""
    if output_format == "text":
        return _text(result)
    if output_format == "json":
        return _json(result)
    if output_format == "sarif":
        return _sarif(result)
    if output_format == "github":
        return _github(result)
    raise ValueError(f"output_format: expected one of {', '.join(FORMATS)}, got {output_format!r}")
