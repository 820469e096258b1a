"""Limiters in a network store whose state is spread over servers that fail apart
(`NetworkStore.spread_over_servers`, a Redis Cluster's nodes): a breaker per server, so a
dead server fails only what it holds. On `MemoryStore` made to look like two servers, "a"
and "b" (a key's first letter), the registrations on "a", which can be failed alone."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

import admission as adm
from admission.stores import MemoryStore
from admission.stores.remote import store_breaker


class TwoServers(MemoryStore):
    """A key's state is on server "a" or "b" (its first letter); the limiters'
    registrations are on server "a". ``down`` holds the servers that fail (only
    registrations fail here)."""

    def __init__(self) -> None:
        super().__init__()
        self.down: set[str] = set()

    @property
    def spread_over_servers(self) -> bool:
        return True

    def server_of(self, kind: str, name: str, key: bytes | None) -> str | None:
        if kind == "register":
            return "a"
        return None if key is None else key[:1].decode()

    async def register(self, kind: str, name: str, config: Mapping[str, float]) -> None:
        if "a" in self.down:
            raise adm.StoreUnavailable(self.label, "server a is down")
        await super().register(kind, name, config)


def test_a_registration_failing_on_its_server_opens_no_other_servers_breaker() -> None:
    """Server "a" (the registrations') dies. A limiter made then fails every call (it
    cannot register), also on keys of server "b": those failures are server "a"'s, so
    server "b"'s breaker stays closed, and a limiter registered before goes on deciding
    its keys on "b"."""
    store = TwoServers()
    old = adm.KeyedTokenBucket(rate=1, per=3600, burst=100, name="old", store=store)
    new = adm.KeyedTokenBucket(rate=1, per=3600, burst=100, name="new", store=store)

    async def main() -> None:
        await old.acquire("b1", timeout=0)  # registered
        store.down.add("a")
        for _ in range(10):  # more than the breaker needs to open
            with pytest.raises(adm.StoreUnavailable):
                await new.acquire("b1", timeout=0)
        assert store_breaker(store, "b").state == "closed"
        assert store_breaker(store, "a").state == "open"  # the new limiter refused at once
        await old.acquire("b1", timeout=0)  # "b" is up: decided there

    asyncio.run(main())
