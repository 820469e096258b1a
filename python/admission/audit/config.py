"""The audit's settings: which rules run where, and what the user's code calls its limiters.

Owns ``[tool.admission.audit]`` in ``pyproject.toml``: finding the file, reading it, checking
every key (an unknown key or a wrong type is a `AuditConfigError` naming key and file, never a
setting silently ignored) and the rule selection it describes.
"""

from __future__ import annotations

import fnmatch
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from admission.audit.rules import RULES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10: the `tomli` dependency (pyproject.toml) is the same parser
    import tomli as tomllib

__all__ = ["DEFAULT_EXCLUDE", "AuditConfigError", "Settings", "find_pyproject", "load_settings"]

# Directories never worth auditing: environments, caches, build output, VCS metadata.
DEFAULT_EXCLUDE: tuple[str, ...] = (
    ".bzr",
    ".direnv",
    ".eggs",
    ".git",
    ".hg",
    ".mypy_cache",
    ".nox",
    ".pytest_cache",
    ".ruff_cache",
    ".svn",
    ".tox",
    ".venv",
    "__pycache__",
    "__pypackages__",
    "_build",
    "build",
    "dist",
    "node_modules",
    "site-packages",
    "venv",
)

_CODE = re.compile(r"ADM[0-9]{0,3}\Z")
_KNOWN_PREFIXES = frozenset(
    code[:n] for code in (r.code for r in RULES) for n in range(3, len(code) + 1)
)


class AuditConfigError(ValueError):
    """The audit's configuration (file or command line) is not valid; the message says where."""


@dataclass(frozen=True)
class Settings:
    """What to check and how to read the user's code.

    >>> s = Settings(select=("ADM1",), ignore=("ADM103",))
    >>> s.enabled("ADM101"), s.enabled("ADM103"), s.enabled("ADM201")
    (True, False, False)
    """

    # rule codes or prefixes to run ("ADM" = all but the opt-in ones without their settings)
    select: tuple[str, ...] = ("ADM",)
    # codes or prefixes to skip (wins over select)
    ignore: tuple[str, ...] = ()
    # (glob, codes): codes skipped in files matching the glob
    per_file_ignores: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # globs of files or directories to skip, besides DEFAULT_EXCLUDE
    exclude: tuple[str, ...] = ()
    # callables that bound their own concurrency (`myapp.http.fetch`, `*.limited_fetch`)
    bounded_callables: tuple[str, ...] = ()
    # decorators that make a function a request handler (`*.route`, `app.get`)
    handler_decorators: tuple[str, ...] = ()
    # calls that must sit inside a breaker or limiter (ADM601), e.g. `*.chat.completions.create`
    guarded_calls: tuple[str, ...] = ()
    # what ADM302 needs before it reports a thread built outside tests: "repetition" (the
    # file shows the function running again and again) or "none" (any function's thread)
    thread_evidence: str = "repetition"
    # what ADM101/ADM102 need before they report a fan-out in a test file: "count" (a count
    # written large, `range(1000)`) or "data" (any data, as outside tests)
    test_fan_out_evidence: str = "count"
    # the directory that relative globs are read from (the pyproject.toml's; else the cwd)
    root: Path = field(default_factory=Path.cwd)

    def __post_init__(self) -> None:
        _check_choice(self.thread_evidence, THREAD_EVIDENCE, "thread_evidence")
        _check_choice(self.test_fan_out_evidence, TEST_FAN_OUT_EVIDENCE, "test_fan_out_evidence")

    def enabled(self, code: str) -> bool:
        """Whether a rule runs: selected, not ignored, and configured if it is opt-in."""
        if any(code.startswith(prefix) for prefix in self.ignore):
            return False
        if not any(code.startswith(prefix) for prefix in self.select):
            return False
        if code == "ADM601":
            return bool(self.guarded_calls)
        return True

    def ignored_in(self, path: str) -> tuple[str, ...]:
        """The codes skipped in one file (``path`` relative to ``root``, with ``/``)."""
        codes: list[str] = []
        for pattern, ignored in self.per_file_ignores:
            if _glob_match(path, pattern):
                codes.extend(ignored)
        return tuple(codes)

    def excluded(self, path: str) -> bool:
        """Whether a file or directory (relative to ``root``, with ``/``) is skipped."""
        parts = PurePosixPath(path).parts
        for pattern in (*DEFAULT_EXCLUDE, *self.exclude):
            if "/" not in pattern.rstrip("/"):
                name = pattern.rstrip("/")
                if any(fnmatch.fnmatchcase(part, name) for part in parts):
                    return True
            elif _glob_match(path, pattern):
                return True
        return False


def _glob_match(path: str, pattern: str) -> bool:
    """A glob against a relative path; a directory pattern matches everything under it."""
    pattern = pattern.rstrip("/")
    if pattern.startswith("./"):
        pattern = pattern[2:]
    if fnmatch.fnmatchcase(path, pattern):
        return True
    # `tests/fixtures` (or `tests/*/fixtures`) matches `tests/fixtures/a/b.py`
    parts = PurePosixPath(path).parts
    for end in range(1, len(parts)):
        if fnmatch.fnmatchcase("/".join(parts[:end]), pattern):
            return True
    # a pattern without a slash matches the file name anywhere (`*_pb2.py`)
    return "/" not in pattern and bool(parts) and fnmatch.fnmatchcase(parts[-1], pattern)


def check_codes(codes: Iterable[str], where: str) -> tuple[str, ...]:
    """Codes or prefixes as given, each checked against the rule table."""
    checked = []
    for code in codes:
        if not isinstance(code, str):
            raise AuditConfigError(f"{where}: expected rule codes as strings, got {code!r}")
        code = code.strip().upper()
        if not _CODE.match(code) or code not in _KNOWN_PREFIXES:
            known = ", ".join(r.code for r in RULES)
            raise AuditConfigError(f"{where}: unknown rule code {code!r} (known: {known})")
        checked.append(code)
    return tuple(checked)


def find_pyproject(start: Path) -> Path | None:
    """The nearest ``pyproject.toml`` at or above ``start`` with ``[tool.admission.audit]``.

    Returns None when there is none (the defaults apply). A pyproject.toml that cannot be read
    on the way up is an error, not a reason to look further.
    """
    for directory in (start, *start.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            tool = _read_toml(candidate).get("tool")
            admission = tool.get("admission") if isinstance(tool, dict) else None
            if isinstance(admission, dict) and "audit" in admission:
                return candidate
    return None


def _read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise AuditConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise AuditConfigError(f"{path}: not valid TOML: {exc}") from None


# the values of `thread-evidence`, the default first
THREAD_EVIDENCE = ("repetition", "none")
# the values of `test-fan-out-evidence`, the default first
TEST_FAN_OUT_EVIDENCE = ("count", "data")


def _check_choice(value: object, choices: tuple[str, ...], where: str) -> str:
    """``value`` if it is one of ``choices``; else an AuditConfigError naming ``where``."""
    if value not in choices:
        expected = " or ".join(repr(c) for c in choices)
        raise AuditConfigError(f"{where}: expected {expected}, got {value!r}")
    return str(value)


# keys that take one of a few strings: (Settings field, the choices)
_CHOICE_KEYS = {
    "thread-evidence": ("thread_evidence", THREAD_EVIDENCE),
    "test-fan-out-evidence": ("test_fan_out_evidence", TEST_FAN_OUT_EVIDENCE),
}

_LIST_KEYS = {
    "select": "select",
    "ignore": "ignore",
    "exclude": "exclude",
    "bounded-callables": "bounded_callables",
    "handler-decorators": "handler_decorators",
    "guarded-calls": "guarded_calls",
}


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise AuditConfigError(f"{where}: expected a list of non-empty strings, got {value!r}")
    return tuple(value)


def settings_from_table(table: Mapping[str, object], source: str, root: Path) -> Settings:
    """Settings from the contents of ``[tool.admission.audit]`` (``source`` names it)."""
    values: dict[str, object] = {"root": root}
    for key, value in table.items():
        where = f"{source}: [tool.admission.audit] {key}"
        if key in _LIST_KEYS:
            strings = _strings(value, where)
            if key in ("select", "ignore"):
                strings = check_codes(strings, where)
            values[_LIST_KEYS[key]] = strings
        elif key in _CHOICE_KEYS:
            field_name, choices = _CHOICE_KEYS[key]
            values[field_name] = _check_choice(value, choices, where)
        elif key == "per-file-ignores":
            if not isinstance(value, dict):
                raise AuditConfigError(f"{where}: expected a table of glob = [codes]")
            values["per_file_ignores"] = tuple(
                (glob, check_codes(_strings(codes, f"{where}.{glob!r}"), where))
                for glob, codes in value.items()
            )
        else:
            known = ", ".join(sorted([*_LIST_KEYS, *_CHOICE_KEYS, "per-file-ignores"]))
            raise AuditConfigError(
                f"{source}: unknown key {key!r} in [tool.admission.audit] (known: {known})"
            )
    return Settings(**values)  # type: ignore[arg-type]


def load_settings(config: Path | None = None, start: Path | None = None) -> Settings:
    """Settings from ``config`` (a pyproject.toml), else from the nearest one above ``start``.

    No file, or none with ``[tool.admission.audit]``: the defaults, rooted at ``start``.
    """
    start = (start or Path.cwd()).resolve()
    if config is None:
        config = find_pyproject(start)
        if config is None:
            return Settings(root=start)
    elif not config.is_file():
        raise AuditConfigError(f"{config}: no such file")
    data = _read_toml(config)
    tool = data.get("tool", {})
    admission = tool.get("admission", {}) if isinstance(tool, dict) else {}
    table = admission.get("audit", {}) if isinstance(admission, dict) else {}
    if not isinstance(table, dict):
        raise AuditConfigError(f"{config}: [tool.admission.audit] must be a table")
    return settings_from_table(table, str(config), config.resolve().parent)


def with_overrides(
    settings: Settings, select: tuple[str, ...] | None, ignore: tuple[str, ...]
) -> Settings:
    """The command line's ``--select`` (replaces) and ``--ignore`` (adds) over the file's."""
    if select is not None:
        settings = replace(settings, select=select)
    if ignore:
        settings = replace(settings, ignore=settings.ignore + ignore)
    return settings
