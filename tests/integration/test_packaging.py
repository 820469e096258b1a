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

# One wheel per CPython version from the requires-python floor (3.10) to 3.14, per platform and
# architecture: the bindings use the full C API, not abi3 (see rust/py/Cargo.toml). Neither
# free-threaded builds (a GIL guards the waiters' state) nor 32-bit targets are built.
VERSIONS = ("cp310", "cp311", "cp312", "cp313", "cp314")
PLATFORMS = {
    "linux": (
        "manylinux_x86_64",
        "manylinux_aarch64",
        "musllinux_x86_64",
        "musllinux_aarch64",
    ),
    "macos": ("macosx_x86_64", "macosx_arm64"),
    "windows": ("win_amd64",),
}
EXPECTED = {
    platform: {f"{version}-{target}" for version in VERSIONS for target in targets}
    for platform, targets in PLATFORMS.items()
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


def test_wheels_start_at_the_requires_python_floor_and_are_not_abi3() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    floor = re.search(r'^requires-python = ">=3\.(\d+)"$', pyproject, re.M)
    assert floor, "requires-python is not a plain >=3.N floor"
    assert min(VERSIONS) == f"cp3{floor.group(1)}"
    cargo = (REPO / "rust" / "py" / "Cargo.toml").read_text()
    # An abi3 feature would not build (lib.rs refuses it) and would need one wheel, not five.
    assert not re.search(r'"abi3', cargo), "rust/py/Cargo.toml enables an abi3 feature"


def test_cibuildwheel_test_command_points_at_existing_tests() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    section = pyproject.split("[tool.cibuildwheel]", 1)[1].split("\n[", 1)[0]
    command = re.search(r"^test-command = (.+)$", section, re.M)
    assert command, "[tool.cibuildwheel] has no test-command: built wheels would go untested"
    paths = re.findall(r"\{project\}/([\w./-]+)", command.group(1))
    assert paths, command.group(1)
    for path in paths:
        assert (REPO / path).exists(), f"test-command refers to missing {path}"
