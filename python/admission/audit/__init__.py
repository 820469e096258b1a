"""``admission audit``: find the incident's anti-patterns in code before they reach production.

Unbounded fan-out, tasks spawned in loops, a connection per operation, threads per call,
retries without jitter or without end, ``get_event_loop()`` where it no longer works: each a
rule with a code (``ADM101`` ...; see `RULES`), found by reading the code (stdlib ``ast``),
never by running it.

This package is pure Python and imports nothing of admission's native extension, so the audit
runs where no wheel is built (a pre-commit hook, a CI job that only lints).

>>> from admission.audit import audit_source
>>> findings, _ = audit_source("import asyncio\\nasync def f():\\n    asyncio.get_event_loop()\\n")
>>> [(f.code, f.line) for f in findings]
[('ADM501', 3)]
"""

from __future__ import annotations

from admission.audit.config import AuditConfigError, Settings, load_settings
from admission.audit.engine import AuditResult, audit_paths, audit_source
from admission.audit.findings import Edit, Finding, Fix, ParseFailure
from admission.audit.rules import RULES, Rule, rule

__all__ = [
    "RULES",
    "AuditConfigError",
    "AuditResult",
    "Edit",
    "Finding",
    "Fix",
    "ParseFailure",
    "Rule",
    "Settings",
    "audit_paths",
    "audit_source",
    "load_settings",
    "rule",
]
