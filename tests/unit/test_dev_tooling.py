"""The project's own checks agree with each other: CI runs the lint, pre-commit runs the same
commands as `make lint`, and mypy checks for the oldest Python that requires-python allows."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]


def _make_recipe(target: str) -> list[str]:
    """The commands of a Makefile target, with the venv's variables spelled out."""
    text = (REPO / "Makefile").read_text()
    found = re.search(rf"^{target}:[^\n]*\n((?:\t[^\n]*\n)+)", text, re.M)
    assert found, f"no {target} target in the Makefile"
    lines = [line.strip() for line in found.group(1).splitlines()]
    return [
        line.replace("$(VPY)", ".venv/bin/python")
        .replace("$(VENV)", ".venv")
        .replace("$(MAKE)", "make")
        for line in lines
    ]


def test_ci_runs_the_lint_and_the_tests() -> None:
    commands = [
        shlex.split(line)
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert ["make", "lint"] in commands
    assert ["make", "test"] in commands


def test_pre_commit_runs_what_make_lint_runs() -> None:
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    hooks = [hook for repo in config["repos"] for hook in repo["hooks"]]
    assert all(repo["repo"] == "local" for repo in config["repos"])
    # Whole commands, not file by file: the same scope as `make lint`.
    assert all(hook.get("pass_filenames") is False for hook in hooks)
    assert [hook["entry"] for hook in hooks] == _make_recipe("lint")


def test_mypy_checks_for_the_oldest_supported_python() -> None:
    with (REPO / "pyproject.toml").open("rb") as f:
        pyproject = tomllib.load(f)
    floor = re.fullmatch(r">=(3\.\d+)", pyproject["project"]["requires-python"])
    assert floor, pyproject["project"]["requires-python"]
    assert pyproject["tool"]["mypy"]["python_version"] == floor.group(1)
