"""``admission audit [PATH...]``: the command line of the audit.

Exit status: 0 nothing found, 1 findings (or files that did not parse), 2 a usage,
configuration or I/O error (a path that does not exist, a file that cannot be read, a bad
``[tool.admission.audit]``), 3 an internal error of the audit. ``--exit-zero`` turns 1 into 0,
never 2 or 3.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from admission.audit.config import AuditConfigError, check_codes, load_settings, with_overrides
from admission.audit.engine import audit_paths
from admission.audit.report import FORMATS, render, statistics

__all__ = ["main"]

OK, FINDINGS, USAGE_ERROR, INTERNAL_ERROR = 0, 1, 2, 3


def _codes(text: str) -> tuple[str, ...]:
    try:
        return check_codes([c for c in text.split(",") if c.strip()], "codes")
    except AuditConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("codes: ")) from None


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Find unbounded fan-out, tasks spawned in loops, a connection per operation, "
            "threads per call, retries without jitter or end, and get_event_loop() where it "
            "no longer works. Settings: [tool.admission.audit] in the nearest pyproject.toml."
        ),
        epilog="Exit status: 0 clean, 1 findings, 2 usage/configuration/I/O error, 3 internal "
        "error.",
    )
    parser.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="files or directories (default: .)"
    )
    parser.add_argument(
        "--select",
        type=_codes,
        metavar="CODES",
        help="comma-separated codes or prefixes to run instead of the configured ones "
        "(e.g. ADM1,ADM201)",
    )
    parser.add_argument(
        "--ignore",
        type=_codes,
        default=(),
        metavar="CODES",
        help="comma-separated codes or prefixes to skip, besides the configured ones",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="text",
        dest="output_format",
        help="text (default), json, sarif (2.1.0) or github (workflow annotations)",
    )
    parser.add_argument(
        "--output", type=Path, metavar="FILE", help="write the report to FILE, not stdout"
    )
    parser.add_argument(
        "--statistics", action="store_true", help="only the number of findings per rule"
    )
    parser.add_argument(
        "--exit-zero", action="store_true", help="exit 0 even when something is found"
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PYPROJECT",
        help="read [tool.admission.audit] from this file instead of the nearest pyproject.toml",
    )
    return parser


def _run(argv: Sequence[str] | None, prog: str) -> int:
    args = _parser(prog).parse_args(argv)
    try:
        settings = load_settings(args.config)
        settings = with_overrides(settings, args.select, args.ignore)
    except AuditConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return USAGE_ERROR
    paths = args.paths or [Path(".")]
    result = audit_paths(paths, settings)
    report = statistics(result) if args.statistics else render(result, args.output_format)
    if args.output is not None:
        try:
            args.output.write_text(report, encoding="utf-8")
        except OSError as exc:
            print(f"{prog}: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return USAGE_ERROR
    else:
        sys.stdout.write(report)
        sys.stdout.flush()
    for error in result.io_errors:
        print(f"{prog}: {error}", file=sys.stderr)
    for error in result.internal_errors:
        print(f"{prog}: internal error (please report it): {error}", file=sys.stderr)
    if result.internal_errors:
        return INTERNAL_ERROR
    if result.io_errors:
        return USAGE_ERROR
    if (result.findings or result.parse_failures) and not args.exit_zero:
        return FINDINGS
    return OK


def main(argv: Sequence[str] | None = None, prog: str = "admission audit") -> int:
    """Run the audit with command-line arguments; return the exit status."""
    try:
        return _run(argv, prog)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else USAGE_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception:
        print(f"{prog}: internal error (please report it):", file=sys.stderr)
        traceback.print_exc()
        return INTERNAL_ERROR
