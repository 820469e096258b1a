"""The audit engine: parse failures (ADM000), ``# noqa``, the order of results, names resolved
through imports, selection, and importing without the native extension."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from admission.audit import Settings, audit_paths, audit_source

SLEEPY = "import time\n\nasync def f():\n    time.sleep(1)\n"


def codes(source: str, settings: Settings | None = None) -> list[tuple[int, str]]:
    findings, failures = audit_source(textwrap.dedent(source), "m.py", settings)
    assert failures == []
    return [(f.line, f.code) for f in findings]


# -- ADM000 ------------------------------------------------------------------------------

UNPARSABLE = {
    "unclosed bracket": b"x = (1,\n",
    "bad indentation": b"def f():\nreturn 1\n",
    "stray indent": b"x = 1\n    y = 2\n",
    "invalid syntax": b"def f(:\n    pass\n",
    "await outside function at top of a lambda": b"f = lambda: (yield from)\n",
    "null byte": b"x = 1\x00\n",
    "not utf-8": b"x = '\xff\xfe'\n",
    "unknown coding cookie": b"# -*- coding: no-such-codec -*-\nx = 1\n",
    "python 2 print": b"print 'hello'\n",
    "nesting deeper than the parser allows": b"x = " + b"(" * 300 + b")" * 300 + b"\n",
}

PARSABLE = {
    "empty file": b"",
    "only comments": b"# nothing here\n",
    "byte order mark": b"\xef\xbb\xbfimport asyncio\n",
    "latin-1 coding cookie": b"# -*- coding: latin-1 -*-\nname = '\xe9t\xe9'\n",
    "windows line endings": b"import asyncio\r\nx = 1\r\n",
    "form feed": b"\x0cimport asyncio\n",
    "match statement": b"match x:\n    case 1:\n        pass\n",
    "walrus and f-strings": b"if (n := 3):\n    print(f'{n=}')\n",
    "no final newline": b"x = 1",
    "tabs": b"if True:\n\tx = 1\n",
}


@pytest.mark.parametrize("source", UNPARSABLE.values(), ids=UNPARSABLE.keys())
def test_unparsable_source_is_one_adm000(source: bytes) -> None:
    findings, failures = audit_source(source, "bad.py")
    assert findings == []
    assert len(failures) == 1
    failure = failures[0]
    assert failure.path == "bad.py"
    assert failure.line >= 1
    assert failure.column >= 1
    assert failure.message


@pytest.mark.parametrize("source", PARSABLE.values(), ids=PARSABLE.keys())
def test_parsable_edge_cases_are_not_adm000(source: bytes) -> None:
    findings, failures = audit_source(source, "ok.py")
    assert failures == []
    assert findings == []


def test_syntax_error_position_is_reported() -> None:
    _, failures = audit_source("x = 1\ny = (\n", "bad.py")
    assert (failures[0].line, failures[0].message.startswith("syntax error")) == (2, True)


def _elifs(count: int) -> str:
    """An async function of ``count`` branches, the last of which sleeps."""
    branches = "".join(f"    elif x == {i}:\n        return {i}\n" for i in range(1, count - 1))
    return (
        "import time\n\nasync def f(x):\n    if x == 0:\n        return 0\n"
        f"{branches}    else:\n        time.sleep(1)\n"
    )


# Valid code nested deeper than the interpreter's recursion limit (1,000 frames): each builds
# an `ast` deeper than `ast.parse` and the walk allow by default. (line, code) expected.
DEEP = {
    "3,000 elifs": (_elifs(3000), (3 + 2 * 3000, "ADM201")),
    "a sum of 50,000 terms": (
        SLEEPY + "a = " + " + ".join(["b"] * 50_000) + "\n",
        (4, "ADM201"),
    ),
}


@pytest.mark.skipif(
    (3, 12) <= sys.version_info < (3, 14),
    reason="3.12 and 3.13 fix the depth of ast construction in C (about 3,000 and 10,000)",
)
@pytest.mark.parametrize(("source", "expected"), DEEP.values(), ids=DEEP.keys())
def test_code_nested_deeper_than_the_recursion_limit_is_parsed_and_checked(
    source: str, expected: tuple[int, str], tmp_path: Path
) -> None:
    limit = sys.getrecursionlimit()
    findings, failures = audit_source(source, "deep.py")
    assert failures == []
    assert [(f.line, f.code) for f in findings] == [expected]
    # the same through a run over files (the cycle collector is off there)
    (tmp_path / "deep.py").write_text(source)
    result = audit_paths([tmp_path], Settings(root=tmp_path))
    assert result.parse_failures == []
    assert result.internal_errors == []
    assert [(f.line, f.code) for f in result.findings] == [expected]
    assert sys.getrecursionlimit() == limit


def test_more_elifs_than_the_parser_allows_are_one_adm000() -> None:
    # CPython's parser stops at a fixed depth of rules (about 6,000 nested `elif`s); Python
    # cannot compile such a file either
    findings, failures = audit_source(_elifs(7000), "deep.py")
    assert findings == []
    assert [(f.line, f.message.startswith("cannot parse")) for f in failures] == [(1, True)]


def test_the_run_goes_on_after_a_file_that_does_not_parse(tmp_path: Path) -> None:
    (tmp_path / "a_broken.py").write_text("def f(:\n")
    (tmp_path / "b_sleepy.py").write_text(SLEEPY)
    (tmp_path / "c_broken.py").write_bytes(b"x = '\xff'\n")
    (tmp_path / "d_sleepy.py").write_text(SLEEPY)
    result = audit_paths([tmp_path], Settings(root=tmp_path))
    assert [Path(f.path).name for f in result.parse_failures] == ["a_broken.py", "c_broken.py"]
    assert [(Path(f.path).name, f.code) for f in result.findings] == [
        ("b_sleepy.py", "ADM201"),
        ("d_sleepy.py", "ADM201"),
    ]


def test_adm000_can_be_ignored(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("def f(:\n")
    result = audit_paths([tmp_path], Settings(root=tmp_path, ignore=("ADM000",)))
    assert result.parse_failures == []


# -- noqa ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("comment", "suppressed"),
    [
        ("# noqa", True),
        ("# NOQA", True),
        ("# noqa: ADM201", True),
        ("# noqa:ADM201", True),
        ("# noqa: ADM2", True),
        ("# noqa: ADM", True),
        ("# noqa: E501, ADM201", True),
        ("# noqa: ADM201 blocking on purpose: a test double", True),
        ("# something else  # noqa: ADM201", True),
        ("# noqa: ADM101", False),
        ("# noqa: ADM20", True),
        ("# noqa: ADM3", False),
        ("# ruff: noqa", False),
        ("# no qa", False),
    ],
)
def test_noqa_on_the_line(comment: str, suppressed: bool) -> None:
    source = f"import time\n\nasync def f():\n    time.sleep(1)  {comment}\n"
    assert codes(source) == ([] if suppressed else [(4, "ADM201")])


def test_noqa_inside_a_string_suppresses_nothing() -> None:
    source = 'import time\n\nasync def f():\n    time.sleep(len("# noqa"))\n'
    assert codes(source) == [(4, "ADM201")]


def test_noqa_applies_to_the_first_line_of_the_node() -> None:
    first = "import time\n\nasync def f():\n    time.sleep(  # noqa: ADM201\n        1,\n    )\n"
    last = "import time\n\nasync def f():\n    time.sleep(\n        1,  # noqa: ADM201\n    )\n"
    assert codes(first) == []
    assert codes(last) == [(4, "ADM201")]


def test_noqa_of_one_line_leaves_the_others() -> None:
    source = "import time\n\nasync def f():\n    time.sleep(1)  # noqa\n    time.sleep(2)\n"
    assert codes(source) == [(5, "ADM201")]


# -- selection ----------------------------------------------------------------------------


def test_select_and_ignore() -> None:
    source = (
        "import asyncio, time\nasync def f():\n    time.sleep(1)\n    asyncio.get_event_loop()\n"
    )
    assert codes(source) == [(3, "ADM201"), (4, "ADM501")]
    assert codes(source, Settings(select=("ADM5",))) == [(4, "ADM501")]
    assert codes(source, Settings(ignore=("ADM2",))) == [(4, "ADM501")]
    assert codes(source, Settings(select=("ADM2",), ignore=("ADM201",))) == []


def test_per_file_ignores_match_the_path_from_the_root(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.py").write_text(SLEEPY)
    (tmp_path / "app.py").write_text(SLEEPY)
    settings = Settings(root=tmp_path, per_file_ignores=(("tests/*", ("ADM201",)),))
    result = audit_paths([tmp_path], settings)
    assert [Path(f.path).name for f in result.findings] == ["app.py"]


def test_exclude_skips_directories_and_files(tmp_path: Path) -> None:
    for name in ("app.py", "gen/out.py", ".venv/lib.py", "build/x.py", "keep/y_pb2.py"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(SLEEPY)
    settings = Settings(root=tmp_path, exclude=("gen", "*_pb2.py"))
    result = audit_paths([tmp_path], settings)
    assert [Path(f).relative_to(tmp_path).as_posix() for f in result.files] == ["app.py"]


def test_adm601_runs_only_with_targets() -> None:
    source = "async def f(client):\n    await client.chat.completions.create()\n"
    assert codes(source) == []
    configured = Settings(guarded_calls=("*.chat.completions.create",))
    assert codes(source, configured) == [(2, "ADM601")]
    assert codes(source, Settings(guarded_calls=("*.completions.*",))) == [(2, "ADM601")]


# -- order and positions ------------------------------------------------------------------


def test_results_come_in_path_line_column_code_order(tmp_path: Path) -> None:
    body = "import asyncio, time\nasync def f():\n    time.sleep(1); asyncio.get_event_loop()\n"
    for name in ("b.py", "a.py", "sub/c.py", "sub/a.py"):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(body)
    first = audit_paths([tmp_path / "sub", tmp_path], Settings(root=tmp_path))
    again = audit_paths([tmp_path / "sub", tmp_path], Settings(root=tmp_path))
    assert first.findings == again.findings
    keys = [(f.path, f.line, f.column, f.code) for f in first.findings]
    assert keys == sorted(keys)
    # each file once, even when named twice
    assert len(first.files) == 4
    assert len(first.findings) == 8


def test_columns_count_characters_not_bytes() -> None:
    source = 'import time\nasync def f():\n    s = "héhé"; time.sleep(1)\n'
    findings, _ = audit_source(source, "m.py")
    assert (findings[0].line, findings[0].column) == (3, 17)
    assert findings[0].end_column == 30


def test_adm501_fix_replaces_the_attribute() -> None:
    source = "import asyncio\nasync def f():\n    return asyncio.get_event_loop()\n"
    findings, _ = audit_source(source, "m.py")
    fix = findings[0].fix
    assert fix is not None
    (edit,) = fix.edits
    line = source.splitlines()[edit.line - 1]
    fixed = line[: edit.column - 1] + edit.content + line[edit.end_column - 1 :]
    assert fixed == "    return asyncio.get_running_loop()"


# -- names through imports ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("imports", "call", "fires"),
    [
        ("import time", "time.sleep(1)", True),
        ("import time as clock", "clock.sleep(1)", True),
        ("from time import sleep", "sleep(1)", True),
        ("from time import sleep as pause", "pause(1)", True),
        ("import asyncio", "asyncio.sleep(1)", False),
        ("from trio import sleep", "sleep(1)", False),
        ("from .time import sleep", "sleep(1)", False),
        ("from time import *", "sleep(1)", False),
        ("", "time.sleep(1)", False),
        ("import mytime as time", "time.sleep(1)", False),
    ],
)
def test_names_resolve_through_the_files_imports(imports: str, call: str, fires: bool) -> None:
    source = f"{imports}\n\nasync def f():\n    {call}\n"
    assert codes(source) == ([(4, "ADM201")] if fires else [])


def test_function_level_imports_count() -> None:
    source = "async def f():\n    from time import sleep\n    sleep(1)\n"
    assert codes(source) == [(3, "ADM201")]


# -- the native extension is not needed ---------------------------------------------------

_WITHOUT_NATIVE = """
import sys
sys.modules["admission._native"] = None  # any import of the extension now fails
import admission.audit
findings, _ = admission.audit.audit_source({source!r}, "m.py")
print([f.code for f in findings])
try:
    admission.TokenBucket
except ImportError as exc:
    print("ImportError:", "native extension" in str(exc))
"""


def test_audit_imports_and_runs_without_the_native_extension() -> None:
    script = _WITHOUT_NATIVE.format(source=SLEEPY)
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "error"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["['ADM201']", "ImportError: True"]
    assert "admission._native" not in done.stderr


# -- memory -------------------------------------------------------------------------------


@pytest.mark.parametrize("source", [SLEEPY * 20, "def f(:\n"], ids=["parses", "does not parse"])
def test_a_file_leaves_no_reference_cycle_behind(source: str) -> None:
    # audit_paths runs with the cycle collector off (speed): each file's tree and facts must
    # be freed by reference counting alone, or memory grows with the corpus
    import gc

    audit_source(source, "m.py")  # imports and caches warmed up
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        audit_source(source, "m.py")
        unreachable = gc.collect()
        kinds = sorted({type(o).__name__ for o in gc.garbage})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if enabled:
            gc.enable()
    assert (unreachable, kinds) == (0, [])
