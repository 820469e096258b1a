"""A missing optional dependency says which extra installs it, in the same words everywhere.

Each feature is called with its package hidden (``sys.modules[name] = None`` makes importing it
fail as if it were not installed); the message must name the package and an extra that
pyproject.toml defines and that lists the package.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import admission as adm
from admission import cli
from admission.pools import _driver

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
HINT = re.compile(r"needs (\S+): pip install 'admission\[(\w+)\]'")


def _extras() -> dict[str, list[str]]:
    with (REPO / "pyproject.toml").open("rb") as f:
        extras: dict[str, list[str]] = tomllib.load(f)["project"]["optional-dependencies"]
    return extras


def _read_yaml(tmp_path: Path) -> None:
    path = tmp_path / "admission.yaml"
    path.write_text("limits: {}\\n")
    adm.Config.from_file(path)


FEATURES: dict[str, tuple[str, str, Callable[[Path], object]]] = {
    # id: (hidden module, the distribution the extra must list, the call)
    "metrics.serve": ("prometheus_client", "prometheus_client", lambda _: adm.metrics.serve(0)),
    "metrics.register": (
        "prometheus_client",
        "prometheus_client",
        lambda _: adm.metrics.register(),
    ),
    "metrics.unregister": (
        "prometheus_client",
        "prometheus_client",
        lambda _: adm.metrics.unregister(),
    ),
    "yaml": ("yaml", "pyyaml", _read_yaml),
    "postgres": ("asyncpg", "asyncpg", lambda _: _driver.driver()),
    "redis": ("redis", "redis", lambda _: adm.stores.Redis()),
}


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_a_missing_package_names_its_extra(
    feature: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module, distribution, call = FEATURES[feature]
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError) as info:
        call(tmp_path)
    found = HINT.search(str(info.value))
    assert found, str(info.value)
    extra = found.group(2)
    listed = [re.split(r"[<>=;\\[ ]", req, maxsplit=1)[0].lower() for req in _extras()[extra]]
    assert distribution in listed, (extra, _extras()[extra])


def test_the_demo_without_httpx_says_to_install_the_demo_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)
    assert cli.main(["demo", "--calls", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    found = HINT.search(err)
    assert found, err
    assert found.groups() == ("httpx", "demo")
    assert any(req.startswith("httpx") for req in _extras()["demo"])
