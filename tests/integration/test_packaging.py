"""`[tool.cibuildwheel]` in pyproject.toml: which wheels CI would build on each platform.

Building them needs Docker (Linux) or the platform itself, neither of which runs here; but
``cibuildwheel --print-build-identifiers`` reads and validates the configuration (unknown keys
and bad selectors are errors) and lists exactly the builds it would run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# One abi3 wheel per platform and architecture serves every CPython >= 3.10 (see the pyo3
# `abi3-py310` feature), so only cp310 is built; 32-bit targets are not.
EXPECTED = {
    "linux": {
        "cp310-manylinux_x86_64",
        "cp310-manylinux_aarch64",
        "cp310-musllinux_x86_64",
        "cp310-musllinux_aarch64",
    },
    "macos": {"cp310-macosx_x86_64", "cp310-macosx_arm64"},
    "windows": {"cp310-win_amd64"},
}


def _cibuildwheel() -> str:
    here = Path(sys.executable).parent / ("cibuildwheel.exe" if os.name == "nt" else "cibuildwheel")
    found = str(here) if here.exists() else shutil.which("cibuildwheel")
    if found is None:
        pytest.fail(
            "cibuildwheel is not installed; `make test` installs it from requirements/dev.txt"
        )
    return found


def _identifiers(platform: str) -> list[str]:
    # Only pyproject.toml may configure the run: drop any CIBW_* overrides from the environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIBW_")}
    proc = subprocess.run(
        [_cibuildwheel(), "--print-build-identifiers", "--platform", platform],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"cibuildwheel failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout.split()


@pytest.mark.parametrize("platform", sorted(EXPECTED))
def test_cibuildwheel_builds_the_intended_wheels(platform: str) -> None:
    ids = _identifiers(platform)
    assert len(ids) == len(set(ids)), ids
    assert set(ids) == EXPECTED[platform]


def test_build_selector_matches_the_abi3_floor_and_requires_python() -> None:
    cargo = (REPO / "rust" / "py" / "Cargo.toml").read_text()
    abi3 = re.search(r'"abi3-py3(\d+)"', cargo)
    assert abi3, (
        "rust/py/Cargo.toml no longer builds an abi3 extension: revisit [tool.cibuildwheel]"
    )
    minor = abi3.group(1)
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(rf'^requires-python = ">=3\.{minor}"$', pyproject, re.M)
    assert {i.split("-")[0] for ids in EXPECTED.values() for i in ids} == {f"cp3{minor}"}


def test_cibuildwheel_test_command_points_at_existing_tests() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    section = pyproject.split("[tool.cibuildwheel]", 1)[1].split("\n[", 1)[0]
    command = re.search(r"^test-command = (.+)$", section, re.M)
    assert command, "[tool.cibuildwheel] has no test-command: built wheels would go untested"
    paths = re.findall(r"\{project\}/([\w./-]+)", command.group(1))
    assert paths, command.group(1)
    for path in paths:
        assert (REPO / path).exists(), f"test-command refers to missing {path}"
