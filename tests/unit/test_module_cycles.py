"""No module cycle in either Rust crate (issue 13), and the check that says so.

``rust/module_cycles.py`` (run by ``make lint``) reads the modules' paths to one another; these
tests run it on the two crates and on small made-up crates, so that a check that stopped
seeing a kind of path would fail here rather than pass everything.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("module_cycles", ROOT / "rust/module_cycles.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = _checker()


def _crate(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / "src"
    for name, text in {"lib.rs": "mod a;\nmod b;\n", **files}.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    return src


@pytest.mark.parametrize("crate", ["rust/core/src", "rust/py/src"])
def test_the_crates_have_no_module_cycle(crate: str) -> None:
    assert check.report(ROOT / crate) == []


def test_a_cycle_through_use_lines_is_found(tmp_path: Path) -> None:
    src = _crate(
        tmp_path,
        {"a.rs": "use crate::b::{B, other};\n", "b.rs": "use crate::{a::A, MAX};\n"},
    )
    assert check.report(src) == [
        f"{src}: modules in a cycle: a, b",
        "    a -> b",
        "    b -> a",
    ]


def test_a_cycle_through_inline_paths_and_super_is_found(tmp_path: Path) -> None:
    # A macro body's path, and siblings in a folder reaching each other through `super`.
    src = _crate(
        tmp_path,
        {
            "a.rs": "macro_rules! m { () => { crate::rt::x::f() } }\n",
            "rt/mod.rs": "mod x;\nmod y;\npub use x::f;\n",
            "rt/x.rs": "use super::y::Y;\npub fn f() {}\n",
            "rt/y.rs": "pub struct Y(super :: super::a::A);\n",
            "b.rs": "",
        },
    )
    assert check.report(src) == [
        f"{src}: modules in a cycle: a, rt::x, rt::y",
        "    a -> rt::x",
        "    rt::x -> rt::y",
        "    rt::y -> a",
    ]


def test_comments_strings_and_a_module_s_own_submodules_are_no_dependency(
    tmp_path: Path,
) -> None:
    src = _crate(
        tmp_path,
        {
            "a.rs": '//! see crate::b\nconst S: &str = "crate::b::X";\n/* crate::b */\n',
            "b.rs": "mod inner;\nuse self::inner::I;\nuse crate::a::S;\n",
            "b/inner.rs": "use super::super::b::J;\nuse crate::b::K;\n",
        },
    )
    assert check.graph(src) == {
        (): set(),
        ("a",): set(),
        ("b",): {("a",)},
        ("b", "inner"): set(),
    }
    assert check.report(src) == []
