"""The public surface: every name in __all__ exists, is documented, and behaves as advertised."""

from __future__ import annotations

import builtins
import pickle
import sys
from importlib import metadata
from pathlib import Path

import pytest

import admission as adm
from admission import cli
from admission.gather import map as gather_map

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]


def test_every_public_name_exists_and_is_documented() -> None:
    for name in adm.__all__:
        obj = getattr(adm, name)
        if name == "MAX_PERMITS":
            assert obj == 2**30 - 1
            continue
        assert obj.__doc__, f"{name} has no docstring"


def test_every_public_name_of_the_stores_exists_and_is_documented() -> None:
    for name in adm.stores.__all__:
        assert getattr(adm.stores, name).__doc__, f"admission.stores.{name} has no docstring"
    # What a store of one's own raises from `NetworkStore.rate_batch` (its docstring names it).
    assert issubclass(adm.stores.BatchContended, Exception)


def test_bucket_surface_from_the_issue() -> None:
    clock = adm.testing.ManualClock()
    b = adm.TokenBucket(rate=50, per=60.0, burst=10, clock=clock)
    assert b.try_acquire() is True
    assert b.try_acquire(cost=3) is True
    d = b.peek(cost=1)
    assert isinstance(d, adm.Decision)
    assert (d.allowed, d.remaining, d.retry_after) == (True, 5, 0.0)
    assert b.stats() == adm.LimiterStats(
        name=None, admitted=2, admitted_cost=4, rejected=0, timed_out=0, cancelled=0
    )


def test_errors_pickle_with_their_attributes() -> None:
    for exc in (
        adm.CapacityError(5, 3),
        adm.AcquireTimeout(2.0, needed=3.0),
        adm.Closed("closed"),
    ):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc)
        assert str(back) == str(exc)
        assert back.__dict__ == exc.__dict__


def test_exception_family() -> None:
    assert issubclass(adm.CapacityError, adm.AdmissionError)
    assert issubclass(adm.CapacityError, ValueError)
    assert issubclass(adm.AcquireTimeout, TimeoutError)
    assert issubclass(adm.Closed, adm.AdmissionError)
    with pytest.raises(adm.CapacityError) as info:
        adm.TokenBucket(rate=10, burst=5).try_acquire(cost=6)
    assert (info.value.cost, info.value.capacity) == (6, 5)


def test_a_star_import_shadows_no_builtin() -> None:
    namespace: dict[str, object] = {}
    exec("from admission import *", namespace)
    shadowed = sorted(set(namespace) & set(dir(builtins)) - {"__builtins__"})
    assert shadowed == []
    assert "map" not in adm.__all__
    # Still there under its module's name.
    assert adm.map is gather_map


def test_the_version_is_cargos_as_installed() -> None:
    with (REPO / "Cargo.toml").open("rb") as f:
        cargo = tomllib.load(f)["workspace"]["package"]["version"]
    with (REPO / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    # One source: Cargo.toml. pyproject.toml asks maturin for it instead of repeating it.
    assert "version" not in project
    assert project["dynamic"] == ["version"]
    assert adm.__version__ == metadata.version("admission") == cargo


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"admission {adm.__version__}\n"
