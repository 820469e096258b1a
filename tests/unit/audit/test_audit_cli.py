"""``admission audit``: arguments, configuration, exit codes and the four output formats (JSON
and SARIF validated against their JSON schemas)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest

import admission.audit.engine
from admission.audit.cli import main

DATA = Path(__file__).parent / "data"
REPORT_SCHEMA = Path(admission.audit.engine.__file__).parent / "schema" / "audit-report-1.json"

SLEEPY = "import time\n\n\nasync def f():\n    time.sleep(1)\n"
LOOPY = "import asyncio\n\n\nasync def g():\n    return asyncio.get_event_loop()\n"
CLEAN = "import asyncio\n\n\nasync def h():\n    await asyncio.sleep(1)\n"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory, the current directory for the test."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "sleepy.py").write_text(SLEEPY)
    (tmp_path / "app" / "loopy.py").write_text(LOOPY)
    (tmp_path / "app" / "clean.py").write_text(CLEAN)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


# -- exit codes ---------------------------------------------------------------------------


def test_findings_exit_1_in_ruffs_concise_text(project: Path, capsys: pytest.CaptureFixture[str]):
    status, out, err = run(capsys, "app")
    assert status == 1
    assert err == ""
    assert out.splitlines() == [
        "app/loopy.py:5:12: ADM501 `asyncio.get_event_loop()` in a coroutine: use "
        "`asyncio.get_running_loop()`, which always returns the loop running this coroutine",
        "app/sleepy.py:5:5: ADM201 `time.sleep` in `async def` blocks the event loop: use "
        "`await asyncio.sleep(...)`",
        "Found 2 findings in 2 files.",
    ]


def test_clean_exits_0(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "app/clean.py") == (0, "All checks passed!\n", "")


def test_default_path_is_the_current_directory(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys)
    assert status == 1
    assert "app/sleepy.py:5:5: ADM201" in out


def test_exit_zero(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "app", "--exit-zero")
    assert status == 0
    assert "ADM201" in out


def test_a_file_that_does_not_parse_exits_1_and_the_rest_is_checked(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "app" / "broken.py").write_text("def f(:\n")
    status, out, _ = run(capsys, "app")
    assert status == 1
    assert out.splitlines()[0].startswith("app/broken.py:1:7: ADM000 syntax error")
    assert "ADM201" in out
    assert out.splitlines()[-1] == ("Found 3 findings in 3 files. (1 file could not be parsed.)")


def test_missing_path_exits_2_after_checking_the_others(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "app", "nowhere.py")
    assert status == 2
    assert "ADM201" in out
    assert err == "admission audit: nowhere.py: no such file or directory\n"


@pytest.mark.parametrize(
    "argv",
    [["--select", "ADM999"], ["--ignore", "E501"], ["--format", "xml"], ["--bogus"]],
)
def test_usage_errors_exit_2(
    project: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    status, out, err = run(capsys, "app", *argv)
    assert status == 2
    assert out == ""
    assert "usage: admission audit" in err


def test_unwritable_output_exits_2(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "app", "--output", "no/such/dir/report.txt")
    assert status == 2
    assert "cannot write no/such/dir/report.txt" in err


def test_internal_error_exits_3_and_the_other_files_are_still_checked(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = admission.audit.engine.run_checks

    def crash_on_loopy(ctx: admission.audit.engine.Context) -> None:
        if ctx.path.endswith("loopy.py"):
            raise RuntimeError("a bug in a rule")
        real(ctx)

    monkeypatch.setattr(admission.audit.engine, "run_checks", crash_on_loopy)
    status, out, err = run(capsys, "app")
    assert status == 3
    assert "app/sleepy.py:5:5: ADM201" in out
    assert "internal error" in err
    assert "RuntimeError: a bug in a rule" in err


# -- selection and configuration -----------------------------------------------------------


def test_select_and_ignore_on_the_command_line(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(capsys, "app", "--select", "ADM5")
    assert [line.split()[1] for line in out.splitlines()[:-1]] == ["ADM501"]
    _, out, _ = run(capsys, "app", "--ignore", "ADM501,ADM2")
    assert out == "All checks passed!\n"


def _configure(project: Path, table: str) -> None:
    (project / "pyproject.toml").write_text(
        "[project]\nname = 'x'\n\n[tool.admission.audit]\n" + textwrap.dedent(table)
    )


def test_configuration_from_the_nearest_pyproject(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _configure(
        project,
        """
        ignore = ["ADM501"]
        exclude = ["app/clean.py"]
        per-file-ignores = { "app/sleepy.py" = ["ADM201"] }
        """,
    )
    assert run(capsys, "app") == (0, "All checks passed!\n", "")
    # found from a subdirectory too, with globs still read from the pyproject's directory
    monkeypatch.chdir(project / "app")
    assert run(capsys, ".")[0] == 0


def test_command_line_select_overrides_and_ignore_adds(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _configure(project, 'select = ["ADM5"]\n')
    assert run(capsys, "app")[1].count("ADM") == 1
    status, out, _ = run(capsys, "app", "--select", "ADM2")
    assert (status, out.split()[1]) == (1, "ADM201")
    assert run(capsys, "app", "--ignore", "ADM501")[0] == 0


def test_settings_read_the_users_code(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "app" / "svc.py").write_text(
        textwrap.dedent(
            """
            import asyncio
            import httpx
            from vendor import fetch, endpoint

            async def fan_out(urls):
                return await asyncio.gather(*[fetch(u) for u in urls])

            @endpoint("x")
            async def handler():
                return httpx.AsyncClient()

            async def call(client):
                return await client.messages.create()
            """
        )
    )
    assert run(capsys, "app/svc.py")[1].split()[1] == "ADM101"
    _configure(
        project,
        """
        bounded-callables = ["vendor.fetch"]
        handler-decorators = ["vendor.endpoint"]
        guarded-calls = ["*.messages.create"]
        """,
    )
    _, out, _ = run(capsys, "app/svc.py")
    assert [line.split()[1] for line in out.splitlines()[:-1]] == ["ADM301", "ADM601"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("bogus = 1\n", "unknown key 'bogus' in [tool.admission.audit]"),
        ('select = "ADM1"\n', "select: expected a list of non-empty strings"),
        ('ignore = ["ADM77"]\n', "unknown rule code 'ADM77'"),
        ('per-file-ignores = ["x"]\n', "expected a table of glob = [codes]"),
        ("exclude = [1]\n", "exclude: expected a list of non-empty strings"),
        ("select = [\n", "not valid TOML"),
        ('thread-evidence = "some"\n', "thread-evidence: expected 'repetition' or 'none'"),
    ],
)
def test_bad_configuration_exits_2_naming_file_and_key(
    project: Path, capsys: pytest.CaptureFixture[str], table: str, message: str
) -> None:
    _configure(project, table)
    status, out, err = run(capsys, "app")
    assert (status, out) == (2, "")
    assert str(project / "pyproject.toml") in err
    assert message in err


def test_thread_evidence_none_reports_a_thread_per_call_of_any_function(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "app" / "worker.py").write_text(
        "import threading\n\ndef launch(job):\n    threading.Thread(target=job).start()\n"
    )
    assert run(capsys, "app/worker.py")[0] == 0  # no sign that launch runs per call
    _configure(project, 'thread-evidence = "none"\n')
    status, out, _ = run(capsys, "app/worker.py")
    assert status == 1
    assert out.splitlines()[0].split()[1] == "ADM302"


def test_explicit_config_file(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "audit.toml").write_text('[tool.admission.audit]\nignore = ["ADM2", "ADM5"]\n')
    assert run(capsys, "app", "--config", "audit.toml")[0] == 0
    status, _, err = run(capsys, "app", "--config", "missing.toml")
    assert status == 2
    assert "missing.toml: no such file" in err


# -- formats ------------------------------------------------------------------------------


def test_statistics(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "app" / "more.py").write_text(SLEEPY + "\n\nasync def k():\n    time.sleep(2)\n")
    status, out, _ = run(capsys, "app", "--statistics")
    assert status == 1
    assert out.splitlines() == [
        "3\tADM201\tblocking-sleep-in-async",
        "1\tADM501\tget-event-loop-in-coroutine",
    ]


def test_output_file(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "app", "--format", "json", "--output", "report.json")
    assert (status, out) == (1, "")
    report = json.loads((project / "report.json").read_text())
    assert report["summary"]["findings"] == 2


def test_json_report(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "app" / "broken.py").write_text("x = (\n")
    _, out, _ = run(capsys, "app", "--format", "json")
    report = json.loads(out)
    jsonschema.validate(report, json.loads(REPORT_SCHEMA.read_text()))
    assert report["version"] == 1
    assert [(f["path"], f["code"], f["line"], f["column"]) for f in report["findings"]] == [
        ("app/loopy.py", "ADM501", 5, 12),
        ("app/sleepy.py", "ADM201", 5, 5),
    ]
    fix = report["findings"][0]["fix"]
    assert fix["edits"] == [
        {"line": 5, "column": 20, "end_line": 5, "end_column": 34, "content": "get_running_loop"}
    ]
    assert report["parse_errors"][0]["path"] == "app/broken.py"
    assert report["summary"] == {
        "files": 4,
        "findings": 2,
        "parse_errors": 1,
        "by_code": {"ADM000": 1, "ADM201": 1, "ADM501": 1},
    }


def test_fingerprints_survive_moved_lines(project: Path, capsys: pytest.CaptureFixture[str]):
    _, before, _ = run(capsys, "app/sleepy.py", "--format", "json")
    (project / "app" / "sleepy.py").write_text("# a new first line\n\n" + SLEEPY)
    _, after, _ = run(capsys, "app/sleepy.py", "--format", "json")
    first, second = json.loads(before)["findings"][0], json.loads(after)["findings"][0]
    assert first["line"] + 2 == second["line"]
    assert first["fingerprint"] == second["fingerprint"]


def _sarif(project: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    (project / "app" / "broken.py").write_text("x = (\n")
    (project / "app" / "daemon.py").write_text(
        "import threading\n\ndef handle(f):\n    threading.Thread(target=f, daemon=True).start()\n"
    )
    status, out, _ = run(capsys, "app", "--format", "sarif")
    assert status == 1
    document: dict[str, object] = json.loads(out)
    return document


def test_sarif_is_valid_sarif_2_1_0(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schema = json.loads((DATA / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))
    document = _sarif(project, capsys)
    jsonschema.Draft4Validator.check_schema(schema)
    jsonschema.Draft4Validator(schema).validate(document)


def test_sarif_content(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run_,) = _sarif(project, capsys)["runs"]  # type: ignore[misc]
    driver = run_["tool"]["driver"]
    rules = {r["id"]: r for r in driver["rules"]}
    assert "ADM101" in rules
    assert "ADM000" not in rules
    assert all(
        r["shortDescription"]["text"] and r["fullDescription"]["text"] for r in rules.values()
    )
    assert rules["ADM302"]["defaultConfiguration"]["level"] == "warning"
    assert rules["ADM601"]["defaultConfiguration"]["enabled"] is False
    results = {r["ruleId"]: r for r in run_["results"]}
    daemon = results["ADM302"]
    assert daemon["level"] == "error"  # a daemon thread never joined
    location = daemon["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {"uri": "app/daemon.py", "uriBaseId": "%SRCROOT%"}
    assert location["region"]["startLine"] == 4
    assert location["region"]["startColumn"] == 5  # 1-based
    assert run_["columnKind"] == "unicodeCodePoints"
    assert run_["originalUriBaseIds"]["%SRCROOT%"]["uri"] == project.as_uri() + "/"
    assert list(daemon["partialFingerprints"]) == ["admissionAudit/v1"]
    assert "primaryLocationLineHash" not in daemon["partialFingerprints"]
    for result in run_["results"]:
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
    fix = results["ADM501"]["fixes"][0]["artifactChanges"][0]["replacements"][0]
    assert fix["insertedContent"]["text"] == "get_running_loop"
    (invocation,) = run_["invocations"]
    assert invocation["executionSuccessful"] is True
    (notification,) = invocation["toolExecutionNotifications"]
    assert notification["descriptor"]["id"] == "ADM000"
    assert notification["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == (
        "app/broken.py"
    )


def test_github_annotations(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "app" / "broken.py").write_text("x = (\n")
    status, out, _ = run(capsys, "app", "--format", "github")
    assert status == 1
    lines = out.splitlines()
    assert lines[0].startswith(
        "::error file=app/broken.py,line=1,endLine=1,col=5,endColumn=5,"
        "title=ADM000 unparsable-file::ADM000 syntax error"
    )
    assert lines[2] == (
        "::warning file=app/sleepy.py,line=5,endLine=5,col=5,endColumn=18,"
        "title=ADM201 blocking-sleep-in-async::ADM201 `time.sleep` in `async def` blocks the "
        "event loop: use `await asyncio.sleep(...)`"
    )


def test_github_annotations_escape_their_separators(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = project / "a,b:c%.py"
    odd.write_text(SLEEPY)
    _, out, _ = run(capsys, str(odd.name), "--format", "github")
    assert out.startswith("::warning file=a%2Cb%3Ac%25.py,line=5,")


# -- entry points -------------------------------------------------------------------------

_ENTRY = """
import runpy, sys
sys.modules["admission._native"] = None  # the extension is not needed
sys.argv = {argv!r}
runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize(
    ("module", "argv"),
    [
        ("admission", ["admission", "audit", "--format", "json"]),
        ("admission.audit", ["admission.audit", "--format", "json"]),
    ],
)
def test_module_entry_points_run_without_the_native_extension(
    project: Path, module: str, argv: list[str]
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _ENTRY.format(argv=[*argv, "app"], module=module)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["summary"]["findings"] == 2


def test_the_main_help_lists_audit(capsys: pytest.CaptureFixture[str]) -> None:
    from admission.cli import main as admission_main

    with pytest.raises(SystemExit):
        admission_main(["--help"])
    assert "audit" in capsys.readouterr().out
    assert admission_main(["audit", "--help"]) == 0
    assert "usage: admission audit" in capsys.readouterr().out
