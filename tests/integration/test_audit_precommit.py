"""The audit's pre-commit hook (``.pre-commit-hooks.yaml``, ``id: admission-audit``), run the
way a user runs it: ``pre-commit try-repo`` on this repository, in a project of its own.

pre-commit installs the package from this source into an environment of its own, which builds
the extension (maturin, from PyPI, in pip's build isolation; the repository's cargo target
directory is reused, so deps are not compiled again). That takes a few minutes the first time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _pre_commit() -> str:
    here = Path(sys.executable).parent / "pre-commit"
    found = str(here) if here.exists() else shutil.which("pre-commit")
    if found is None:
        pytest.fail(
            "pre-commit is not installed; `make test` installs it from requirements/dev.txt"
        )
    return found


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("precommit")
    work = root / "project"
    work.mkdir()
    (work / "bad.py").write_text("import time\n\n\nasync def f():\n    time.sleep(1)\n")
    (work / "ok.py").write_text("import asyncio\n\n\nasync def g():\n    await asyncio.sleep(1)\n")
    env = {
        **os.environ,
        "PRE_COMMIT_HOME": str(root / "cache"),
        "CARGO_TARGET_DIR": str(REPO / "target"),
        # try-repo commits uncommitted changes of the hook's repository to a shadow copy
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
    }
    env.pop("VIRTUAL_ENV", None)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
        subprocess.run(["git", *args], cwd=work, env=env, check=True, timeout=60)
    return work, env


def _try_repo(project: tuple[Path, dict[str, str]], *args: str) -> subprocess.CompletedProcess[str]:
    work, env = project
    return subprocess.run(
        [_pre_commit(), "try-repo", str(REPO), "admission-audit", *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )


def test_the_hook_reports_findings(project: tuple[Path, dict[str, str]]) -> None:
    done = _try_repo(project, "--all-files")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "bad.py:5:5: ADM201 `time.sleep` in `async def` blocks the event loop" in done.stdout
    assert "ok.py:" not in done.stdout


def test_the_hook_passes_clean_files(project: tuple[Path, dict[str, str]]) -> None:
    done = _try_repo(project, "--files", "ok.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "admission audit" in done.stdout
    assert "Passed" in done.stdout
