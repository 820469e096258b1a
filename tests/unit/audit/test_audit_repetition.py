"""ADM302 outside tests: a thread is reported only where the file shows that the function
building it runs repeatedly; test files keep the plain reading (a thread per call)."""

from __future__ import annotations

import pytest

from admission.audit import audit_source
from admission.audit.checks.context import is_test_path

_ONE_THREAD = """\
import threading

def {name}({params}):
    threading.Thread(target=print, daemon=True).start()
{rest}"""


def _adm302_lines(source: str, path: str) -> list[int]:
    findings, failures = audit_source(source, path)
    assert failures == []
    return [f.line for f in findings if f.code == "ADM302"]


def _one_thread(name: str = "launch", params: str = "job", rest: str = "") -> str:
    return _ONE_THREAD.format(name=name, params=params, rest=rest)


@pytest.mark.parametrize(
    "path",
    [
        "tests/test_app.py",
        "tests/helpers.py",
        "pkg/testing/server.py",
        "asyncpg/_testbase/fuzzer.py",
        "app_test.py",
        "conftest.py",
        "dummyserver/testcase.py",
    ],
)
def test_test_paths(path: str) -> None:
    assert is_test_path(path)


@pytest.mark.parametrize(
    "path", ["litestar/_kwargs/cleanup.py", "pkg/contest.py", "latest/app.py", "attest.py"]
)
def test_library_paths(path: str) -> None:
    assert not is_test_path(path)


def test_library_function_with_no_evidence_of_repeating_is_not_reported() -> None:
    assert _adm302_lines(_one_thread(), "pkg/app.py") == []


def test_the_same_function_in_a_test_file_is_reported() -> None:
    assert _adm302_lines(_one_thread(), "tests/test_app.py") == [4]


def test_thread_built_in_a_loop_is_reported() -> None:
    source = (
        "import threading\n\ndef launch(jobs):\n    for job in jobs:\n"
        "        threading.Thread(target=job).start()\n"
    )
    assert _adm302_lines(source, "pkg/app.py") == [5]


@pytest.mark.parametrize("name", ["handle", "handle_message", "on_message", "do_GET"])
def test_handler_named_function_is_reported(name: str) -> None:
    assert _adm302_lines(_one_thread(name=name), "pkg/app.py") == [4]


def test_start_up_callback_is_not_a_handler() -> None:
    assert _adm302_lines(_one_thread(name="on_startup"), "pkg/app.py") == []


def test_route_handler_is_reported() -> None:
    source = (
        "import threading\nfrom fastapi import FastAPI\napp = FastAPI()\n\n"
        '@app.post("/jobs")\ndef launch(job):\n'
        "    threading.Thread(target=print, daemon=True).start()\n"
    )
    assert _adm302_lines(source, "pkg/app.py") == [7]


def test_function_called_in_a_loop_of_the_file_is_reported() -> None:
    rest = "\ndef serve(jobs):\n    for job in jobs:\n        launch(job)\n"
    assert _adm302_lines(_one_thread(rest=rest), "pkg/app.py") == [4]


def test_function_called_once_outside_loops_is_not_reported() -> None:
    rest = "\ndef serve(job):\n    launch(job)\n"
    assert _adm302_lines(_one_thread(rest=rest), "pkg/app.py") == []


def test_function_handed_on_as_a_callback_is_reported() -> None:
    rest = "\ndef wire(bus):\n    bus.subscribe('jobs', launch)\n"
    assert _adm302_lines(_one_thread(rest=rest), "pkg/app.py") == [4]


def test_function_that_is_a_process_target_is_not_a_callback() -> None:
    rest = (
        "\nimport multiprocessing\n\ndef wire(job):\n"
        "    multiprocessing.Process(target=launch, args=(job,)).start()\n"
    )
    assert _adm302_lines(_one_thread(rest=rest), "pkg/app.py") == []


def test_function_called_by_a_handler_is_reported() -> None:
    rest = "\ndef handle(request):\n    launch(request)\n"
    assert _adm302_lines(_one_thread(rest=rest), "pkg/app.py") == [4]
