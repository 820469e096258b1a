"""The release wheel and the sdist, built the way `make wheel` builds them, then installed and used.

The wheel is installed into a brand-new virtual environment (no pip of its own, installed into
by this environment's pip with ``--python``, from the file alone: ``--no-index --no-deps``) and
exercised by a script run in isolated mode from outside the repository, so nothing can be
imported from the source tree by accident. The builds reuse the repository's cargo target
directory, so after ``make develop`` they are incremental (about a second each).

The installed metadata is checked against its sources (the version against Cargo.toml, the
extras against pyproject.toml, the license file against LICENSE), and the ``demo`` extra is
installed as a user would, from the package index (its packages are pip-cached after the
first run), to run ``python -m admission demo`` from that venv.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest

import admission

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "python" / "admission"
BIN = "Scripts" if os.name == "nt" else "bin"


def _toml(name: str) -> dict[str, Any]:
    with (REPO / name).open("rb") as f:
        return tomllib.load(f)


# The sources the built metadata must agree with.
VERSION: str = _toml("Cargo.toml")["workspace"]["package"]["version"]
PROJECT: dict[str, Any] = _toml("pyproject.toml")["project"]


def _tool(name: str) -> str:
    """A tool installed next to the running interpreter (the dev venv), else on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; `make test` installs it from requirements/dev.txt")
    return found


def _proc(
    *args: str | Path, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def _run(*args: str | Path, cwd: Path = REPO, env: dict[str, str] | None = None) -> str:
    proc = _proc(*args, cwd=cwd, env=env)
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} exited with {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc.stdout


def _clean_env() -> dict[str, str]:
    """The environment minus anything that could point Python back at the repository."""
    env = dict(os.environ)
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONSAFEPATH"):
        env.pop(var, None)
    return env


def _pip(python: Path, *args: str | Path) -> str:
    """This environment's pip, acting on the venv of ``python`` (which has no pip of its own)."""
    return _run(
        sys.executable, "-m", "pip", "--python", python, *args, "--disable-pip-version-check"
    )


def _fresh_venv(where: Path, wheel: Path) -> Path:
    """A new venv with the wheel alone installed in it (no dependencies, nothing downloaded)."""
    venv = where / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, env=_clean_env())
    python = venv / BIN / ("python.exe" if os.name == "nt" else "python")
    _pip(python, "install", "--quiet", "--no-index", "--no-deps", "--no-cache-dir", wheel)
    return python


def _git_files(under: str, suffix: str) -> set[str]:
    """Files under ``under`` (relative to the repo) with ``suffix``, on disk and not ignored."""
    out = _run("git", "ls-files", "--cached", "--others", "--exclude-standard", "--", under)
    return {line for line in out.splitlines() if line.endswith(suffix) and (REPO / line).is_file()}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make wheel`'s two commands, with a temporary output directory instead of dist/."""
    out = tmp_path_factory.mktemp("dist")
    maturin = _tool("maturin")
    _run(maturin, "build", "--release", "--out", out, "--quiet")
    _run(maturin, "sdist", "--out", out)
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    wheels = sorted(dist.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def sdist(dist: Path) -> Path:
    sdists = sorted(dist.glob("*.tar.gz"))
    assert len(sdists) == 1, sdists
    return sdists[0]


def test_wheel_is_for_this_cpython_with_stubs(wheel: Path) -> None:
    # One wheel per CPython version (the bindings use the full C API, not abi3).
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert f"-{tag}-{tag}-" in wheel.name, wheel.name
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "admission/py.typed" in names
    assert "admission/_native.pyi" in names
    assert f"admission-{VERSION}.dist-info/licenses/LICENSE" in names
    natives = [
        n for n in names if n.startswith("admission/_native.") and n != "admission/_native.pyi"
    ]
    assert len(natives) == 1, f"expected exactly one compiled extension: {natives}"
    for py in _git_files("python/admission", ".py"):
        assert py.removeprefix("python/") in names, f"{py} is missing from the wheel"
    assert not [n for n in names if n.startswith(("tests/", "rust/", "benches/"))]


SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import admission as adm
    import admission._native as native
    from admission.testing import ManualClock

    venv, repo = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    pkg = Path(adm.__file__).resolve().parent
    for module in (adm, native):
        where = Path(module.__file__).resolve()
        assert venv in where.parents, f"{module.__name__} imported from {where}, not the venv"
        assert repo not in where.parents, f"{module.__name__} imported from the repo: {where}"
    assert (pkg / "py.typed").is_file(), "py.typed not installed"
    assert (pkg / "_native.pyi").is_file(), "_native.pyi not installed"

    clock = ManualClock()
    bucket = adm.TokenBucket(rate=1, per=1.0, burst=2, clock=clock, name="api")
    admitted = [bucket.try_acquire() for _ in range(3)]
    peek = bucket.peek()
    clock.advance(1.0)
    admitted.append(bucket.try_acquire())
    try:
        bucket.try_acquire(cost=3)
        capacity_error = None
    except adm.CapacityError as e:
        capacity_error = type(e).__name__

    window = adm.SlidingWindow(limit=2, window=10.0, clock=clock)
    in_window = [window.try_acquire() for _ in range(3)]
    clock.advance(10.0)
    in_window.append(window.try_acquire())

    sem = adm.Semaphore(2, name="llm")
    with sem:
        inside = (sem.in_use, sem.available, sem.try_acquire(), sem.try_acquire())
    sem.release()
    sem.limit = 3

    b, s = bucket.stats(), sem.stats()
    print(json.dumps({
        "admitted": admitted,
        "peek": [peek.allowed, peek.remaining, peek.retry_after],
        "capacity_error": capacity_error,
        "in_window": in_window,
        "inside": list(inside),
        "sem": [sem.in_use, sem.available, sem.high_water, sem.limit],
        "bucket_stats": [b.name, b.admitted, b.rejected, b.attempts],
        "sem_stats": [s.name, s.admitted, s.rejected, s.high_water],
        "all": sorted(adm.__all__),
    }))
    """
)


def test_wheel_installs_into_a_fresh_venv_and_works(wheel: Path, tmp_path: Path) -> None:
    python = _fresh_venv(tmp_path, wheel)
    venv = python.parents[1]
    script = tmp_path / "use_admission.py"
    script.write_text(SCRIPT)
    # -I: isolated mode (no cwd or script dir on sys.path, no PYTHON* variables, no user site).
    out = _run(python, "-I", script, venv, REPO, cwd=tmp_path, env=_clean_env())
    got = json.loads(out)
    assert got["admitted"] == [True, True, False, True]
    assert got["peek"] == [False, 0, 1.0]
    assert got["capacity_error"] == "CapacityError"
    assert got["in_window"] == [True, True, False, True]
    assert got["inside"] == [1, 1, True, False]
    assert got["sem"] == [0, 3, 2, 3]
    # The CapacityError call counts as rejected too (refused at call time).
    assert got["bucket_stats"] == ["api", 3, 2, 5]
    assert got["sem_stats"] == ["llm", 2, 1, 2]
    assert got["all"] == sorted(admission.__all__)


METADATA_SCRIPT = textwrap.dedent(
    """
    import json
    from importlib import metadata

    import admission

    meta = metadata.metadata("admission")
    print(json.dumps({
        "version": metadata.version("admission"),
        "__version__": admission.__version__,
        "license_expression": meta["License-Expression"],
        "license_files": meta.get_all("License-File"),
        "license_text": metadata.distribution("admission").read_text("licenses/LICENSE"),
        "extras": meta.get_all("Provides-Extra"),
        "requires": meta.get_all("Requires-Dist"),
        "classifiers": meta.get_all("Classifier"),
        "requires_python": meta["Requires-Python"],
    }))
    """
)


def _requirement(text: str) -> tuple[str, str | None]:
    """``("httpx", "demo")`` from ``httpx>=0.27 ; extra == 'demo'`` (names normalized)."""
    spec, _, marker = text.partition(";")
    name = re.split(r"[<>=!~\[ ]", spec.strip(), maxsplit=1)[0]
    extra = re.search(r"extra == ['\"](\w+)['\"]", marker)
    return re.sub(r"[-_.]+", "-", name).lower(), extra.group(1) if extra else None


def test_installed_wheel_reports_version_license_and_extras(wheel: Path, tmp_path: Path) -> None:
    python = _fresh_venv(tmp_path, wheel)
    script = tmp_path / "metadata.py"
    script.write_text(METADATA_SCRIPT)
    got = json.loads(_run(python, "-I", script, cwd=tmp_path, env=_clean_env()))

    # The version: Cargo.toml's, in the metadata, in the package and on the command line.
    assert got["version"] == got["__version__"] == VERSION
    cli = _run(python, "-I", "-m", "admission", "--version", cwd=tmp_path, env=_clean_env())
    assert cli == f"admission {VERSION}\n"

    # The license: an SPDX expression and the file itself.
    assert got["license_expression"] == PROJECT["license"] == "MIT"
    assert got["license_files"] == ["LICENSE"]
    assert got["license_text"] == (REPO / "LICENSE").read_text()

    # The extras, each with the packages pyproject.toml lists for it.
    declared = PROJECT["optional-dependencies"]
    assert sorted(got["extras"]) == sorted(declared)
    assert "demo" in declared
    assert {_requirement(r) for r in got["requires"] if _requirement(r)[1]} == {
        (_requirement(r)[0], extra) for extra, reqs in declared.items() for r in reqs
    }

    # Classifiers: every CPython a wheel is built for, and the package is typed.
    assert got["requires_python"] == PROJECT["requires-python"]
    built = _toml("pyproject.toml")["tool"]["cibuildwheel"]["build"]
    versions = [re.fullmatch(r"cp3(\d+)-\*", b) for b in built]
    assert all(versions), built
    for v in versions:
        assert v is not None
        assert f"Programming Language :: Python :: 3.{v.group(1)}" in got["classifiers"]
    assert "Typing :: Typed" in got["classifiers"]

    # What `pip show` tells a user.
    shown = _pip(python, "show", "admission")
    assert f"Version: {VERSION}\n" in shown
    assert "License-Expression: MIT\n" in shown


def test_demo_extra_runs_the_demo_from_the_wheel(wheel: Path, tmp_path: Path) -> None:
    python = _fresh_venv(tmp_path, wheel)
    demo = (python, "-I", "-m", "admission", "demo", "--calls", "100", "--no-progress")
    # Without the extra: the install hint, not a traceback.
    missing = _proc(*demo, cwd=tmp_path, env=_clean_env())
    assert missing.returncode == 2, missing.stderr
    assert "pip install 'admission[demo]'" in missing.stderr
    assert "Traceback" not in missing.stderr

    # As a user would: `pip install 'admission[demo]'`, from the index.
    _pip(python, "install", "--quiet", f"{wheel}[demo]")
    out = _run(*demo, cwd=tmp_path, env=_clean_env())
    assert "admission: all 100 calls succeeded, no 429" in out
    # The metrics demo's exporter (prometheus_client) comes with the extra too.
    metrics = _run(
        python,
        "-I",
        "-m",
        "admission.demo.metrics",
        "--port",
        "0",
        "--duration",
        "0.5",
        "--tasks",
        "4",
        cwd=tmp_path,
        env=_clean_env(),
    )
    assert "serving metrics on http://127.0.0.1:" in metrics


def test_sdist_holds_everything_a_build_needs(sdist: Path) -> None:
    with tarfile.open(sdist) as tar:
        members = tar.getnames()
    root = members[0].split("/")[0]
    assert root == sdist.name.removesuffix(".tar.gz")
    names = {m.removeprefix(root + "/") for m in members}
    for required in (
        "pyproject.toml",
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        "LICENSE",
        "rust/core/Cargo.toml",
        "rust/py/Cargo.toml",
        "python/admission/__init__.py",
        "python/admission/py.typed",
        "python/admission/_native.pyi",
    ):
        assert required in names, f"{required} is missing from the sdist"
    # Every source file of both crates and of the package, not just a few of them.
    for src in (
        _git_files("rust/core/src", ".rs")
        | _git_files("rust/py/src", ".rs")
        | _git_files("python/admission", ".py")
    ):
        assert src in names, f"{src} is missing from the sdist"
    # No build products of the working tree (e.g. the extension `make develop` put there).
    assert not [n for n in names if n.endswith((".so", ".pyd", ".dylib", ".pyc"))]
    assert not [n for n in names if n.startswith(("target/", ".venv/", "dist/"))]


def test_sdist_is_a_consistent_cargo_workspace(sdist: Path, tmp_path: Path) -> None:
    """The unpacked sdist resolves as a workspace with its own lock file, offline."""
    with tarfile.open(sdist) as tar:
        if hasattr(tarfile, "data_filter"):  # 3.10.12+, 3.11.4+
            tar.extractall(tmp_path, filter="data")
        else:  # pragma: no cover
            tar.extractall(tmp_path)  # our own, freshly built archive
    (root,) = tmp_path.iterdir()
    meta = json.loads(
        _run(
            "cargo",
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--offline",
            "--manifest-path",
            root / "Cargo.toml",
            cwd=tmp_path,
        )
    )
    members = set(meta["workspace_members"])
    names = sorted(p["name"] for p in meta["packages"] if p["id"] in members)
    assert names == ["admission-core", "admission-py"]
