"""The tables of a configuration beyond its limits, and what a `ConcurrencyManager` keeps for
each: the one module that knows them by name (``[pools.NAME]`` today: a `PoolManager`).

`admission.config` parses each table with its section's parser (`PARSERS`; the settings land
in `Config.sections`). `admission.manager` gets one `Section` of each kind per manager
(`sections`) and drives them all the same way, without knowing what they hold:

- ``prepare(settings, source, first)`` runs in a reload before anything changes: it raises
  `ConfigError` to refuse the reload (then nothing changes), or returns the call that puts
  the settings in force, which runs once the limits have switched and cannot fail;
- ``open()`` and ``aclose()`` run with the manager's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Protocol, final

from admission.errors import ConfigError
from admission.policies import PolicySet
from admission.pools.config import PoolConfig
from admission.pools.errors import UnknownPool
from admission.pools.manager import PoolManager, _ConnectionBlock
from admission.pools.settings import pool_configs

__all__ = ["PARSERS", "ConnectionBlock", "Section", "connection", "pool_manager", "sections"]

Parser = Callable[[Mapping[str, Any], PolicySet, Mapping[str, str]], Mapping[str, Any]]
"""Settings from a section's table, given the policies in force and the environment (for
variables the table names); raises `ConfigError` naming the key."""

PARSERS: Mapping[str, Parser] = MappingProxyType({"pools": pool_configs})
"""The parser of each section, by the table's name at the top of the file."""

ConnectionBlock = _ConnectionBlock
"""What ``manager.connection(name)`` returns: ``async with`` it for a connection."""


class Section(Protocol):
    """What a manager keeps for one section of its configuration."""

    def prepare(
        self, settings: Mapping[str, Any], source: str, first: bool
    ) -> Callable[[], None]: ...
    async def open(self) -> None: ...
    async def aclose(self) -> None: ...


def sections() -> dict[str, Section]:
    """A new manager's sections, one of each kind, by the table's name."""
    return {"pools": _Pools()}


def _nothing() -> None:
    pass


@final
class _Pools:
    """The ``[pools]`` tables: one `PoolManager`, made by the first configuration (the
    manager's construction) and kept across reloads, which may change only its live settings:
    a pool is never dropped by a reload."""

    __slots__ = ("manager",)

    def __init__(self) -> None:
        self.manager: PoolManager | None = None

    def prepare(
        self, settings: Mapping[str, PoolConfig], source: str, first: bool
    ) -> Callable[[], None]:
        manager = self.manager
        if manager is None:
            if not settings:
                return _nothing
            if not first:
                raise ConfigError(
                    "pools cannot be added by a reload: restart to apply",
                    key="pools",
                    source=source,
                )
            made = PoolManager(settings)

            def keep() -> None:
                self.manager = made

            return keep
        if not settings:
            raise ConfigError(
                "the pools cannot be removed by a reload: restart to apply",
                key="pools",
                source=source,
            )
        try:
            manager.reconfigure(settings, check_only=True)
        except ValueError as exc:
            raise ConfigError(str(exc), key="pools", source=source) from None
        return lambda: manager.reconfigure(settings)  # checked: only live settings change

    async def open(self) -> None:
        if self.manager is not None:
            await self.manager.open()

    async def aclose(self) -> None:
        if self.manager is not None:
            await self.manager.close()


def _pools(of: Mapping[str, Section]) -> _Pools:
    section = of["pools"]
    assert isinstance(section, _Pools)
    return section


def pool_manager(of: Mapping[str, Section], source: str) -> PoolManager:
    """The `PoolManager` of a manager's sections; `UnknownPool` if none is configured."""
    manager = _pools(of).manager
    if manager is None:
        raise UnknownPool("", f"no pool is configured ({source} has no [pools.<name>] table)")
    return manager


def connection(of: Mapping[str, Section], name: str, source: str) -> ConnectionBlock:
    """``async with`` it for a connection of the pool ``name``; `UnknownPool` if none."""
    manager = _pools(of).manager
    if manager is None:
        raise UnknownPool(
            name,
            f"no pool named {name!r}: no pool is configured (add a [pools.{name}] table "
            f"to {source})",
        )
    return manager.connection(name)
