"""ADM302 outside tests: a thread is reported only where the file shows that the function
building it runs repeatedly; test files keep the plain reading (a thread per call)."""

from __future__ import annotations

import pytest
from fixture_cases import FIXTURES, load

from admission.audit import Settings, audit_source
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
    "path",
    [
        "litestar/_kwargs/cleanup.py",
        "pkg/contest.py",
        "latest/app.py",
        "attest.py",
        "pkg/testimony.py",
        "pkg/tester.py",
    ],
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


@pytest.mark.parametrize(
    ("rest", "why"),
    [
        ("\ndef serve():\n    for job in launch(1):\n        pass\n", "a for's iterable runs once"),
        ("\ndef serve():\n    return [j for j in launch(1)]\n", "so does a comprehension's first"),
        (
            "\ndef write(stream, launch):\n    stream.write(1, launch)\n",
            "a parameter of the same name is not the function",
        ),
        ("\ndef show():\n    print(launch.__name__)\n", "the receiver of an attribute"),
        ("\nimport atexit\natexit.register(launch, 1)\n", "atexit runs it once"),
        ("\nimport threading\nthreading.Timer(60, launch, (1,)).start()\n", "a Timer once"),
        ("\nfirst, second = launch, 1\n", "bound to names, not stored on an object"),
    ],
)
def test_what_is_not_evidence_of_repetition(rest: str, why: str) -> None:
    assert _adm302_lines(_one_thread(rest=rest), "pkg/app.py") == [], why


def test_a_shutdown_hook_is_not_a_handler() -> None:
    assert _adm302_lines(_one_thread(name="on_shutdown"), "pkg/app.py") == []


def test_the_default_fixtures_good_cases_fire_without_the_evidence_reading() -> None:
    # each good case of the default's fixture file has a thread the wider reading reports:
    # what keeps it out is the evidence reading alone
    fixture = load(FIXTURES / "adm302_repetition.py")
    text = fixture.source.splitlines()
    with_threads = [
        (name, first, last)
        for name, first, last in fixture.good_ranges
        if any("Thread(" in line for line in text[first - 1 : last])
    ]
    assert len(with_threads) >= 7
    for evidence, reported in (("repetition", False), ("none", True)):
        findings, _ = audit_source(
            fixture.source, fixture.path.name, Settings(thread_evidence=evidence)
        )
        lines = {f.line for f in findings if f.code == "ADM302"}
        for name, first, last in with_threads:
            assert any(first <= line <= last for line in lines) == reported, (evidence, name)


def test_a_bad_thread_evidence_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="thread_evidence"):
        Settings(thread_evidence="some")


@pytest.mark.parametrize(
    "rest",
    [
        "\nimport threading\n\ndef handle(request):\n"
        "    threading.Timer(5, launch, (request,)).start()\n",
        "\nimport atexit\n\ndef serve(jobs):\n    for job in jobs:\n"
        "        atexit.register(launch, job)\n",
    ],
)
def test_a_function_run_later_runs_as_often_as_it_is_scheduled(rest: str) -> None:
    # a Timer per request, or a registration per job: the function runs per request or job
    assert _adm302_lines(_one_thread(rest=rest), "pkg/app.py") == [4]
