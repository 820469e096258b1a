"""The public API as type checkers see it: `cases.py` checked by mypy and by pyright.

Each checker must report an error on exactly the lines of `cases.py` marked ``# error`` (one
mistake per line) and nowhere else, for the oldest supported Python (3.10). They check the
installed package, as a user's checker would: the one this interpreter imports.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import mypy.api
import pytest

REPO = Path(__file__).resolve().parents[2]
CASES = Path(__file__).with_name("cases.py")
PYTHON_VERSION = "3.10"  # requires-python's floor


def _marked() -> set[int]:
    lines = CASES.read_text().splitlines()
    marked = {n for n, line in enumerate(lines, 1) if line.rstrip().endswith("# error")}
    assert marked, f"{CASES} marks no line: the tests would check nothing"
    return marked


def test_mypy_strict_reports_exactly_the_marked_lines() -> None:
    # The project's own settings (strict), as `make lint` runs it.
    stdout, stderr, _ = mypy.api.run(
        [
            "--config-file",
            str(REPO / "pyproject.toml"),
            "--python-version",
            PYTHON_VERSION,
            "--python-executable",
            sys.executable,
            "--no-error-summary",
            "--show-absolute-path",
            str(CASES),
        ]
    )
    assert not stderr, stderr
    errors = re.findall(r"^(.+?):(\d+): error: ", stdout, re.M)
    elsewhere = [e for e in errors if Path(e[0]) != CASES]
    assert not elsewhere, stdout
    assert {int(line) for _, line in errors} == _marked(), stdout


def test_pyright_strict_reports_exactly_the_marked_lines() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyright",
            "--outputjson",
            "--pythonversion",
            PYTHON_VERSION,
            "--pythonpath",
            sys.executable,
            str(CASES),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if "No module named pyright" in proc.stderr:
        pytest.fail("pyright is not installed; `make test` installs it from requirements/dev.txt")
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"pyright exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    errors = [d for d in report["generalDiagnostics"] if d["severity"] == "error"]
    shown = "\n".join(f"{d['range']['start']['line'] + 1}: {d['message']}" for d in errors)
    assert not [d for d in errors if Path(d["file"]) != CASES], shown
    assert {d["range"]["start"]["line"] + 1 for d in errors} == _marked(), shown
