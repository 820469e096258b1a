"""A manager's limits in a store (``[stores.NAME]`` and ``store =``), on the network-store
contract's reference, ``kind = "memory"`` (`MemoryStore`): admission through the store,
failure modes, the sync paths' error, reloads (kept, refused, moved, replaced stores), and
the stores' lifecycle. Two processes sharing a limit through a shared-memory store:
tests/integration/test_manager_shared_memory.py."""

from __future__ import annotations

import dataclasses
import sys
import types
from typing import Any, ClassVar

import anyio
import pytest
from support import ASYNCIO_ONLY, wait_until

import admission as adm
from admission import _sections
from admission.stores import MemoryStore, RemoteSemaphore, RemoteTokenBucket

pytestmark = [pytest.mark.anyio, ASYNCIO_ONLY, pytest.mark.usefixtures("no_admission_variables")]


def config(**limit: Any) -> dict[str, Any]:
    """One store of kind memory, ``test``, and one limit ``api`` in it."""
    return {
        "stores": {"test": {"kind": "memory"}},
        "limits": {"api": {"store": "test", "concurrency": 2, **limit}},
    }


def memory(manager: adm.ConcurrencyManager, name: str = "test") -> MemoryStore:
    store = manager.store(name)
    assert isinstance(store, MemoryStore)
    return store


async def state(manager: adm.ConcurrencyManager, name: str = "api") -> tuple[int, int]:
    """(leases held, waiters queued) in the store, as every process sees them."""
    semaphore = manager.semaphore(name)
    assert isinstance(semaphore, RemoteSemaphore)
    return await semaphore.state()


@pytest.fixture
def closed_stores(monkeypatch: pytest.MonkeyPatch) -> list[MemoryStore]:
    """The memory stores whose ``aclose`` ran, in order."""
    closed: list[MemoryStore] = []

    async def aclose(self: MemoryStore) -> None:
        closed.append(self)

    monkeypatch.setattr(MemoryStore, "aclose", aclose)
    return closed


# -- admission through the store -------------------------------------------------------------


async def test_the_limit_s_semaphore_and_buckets_live_in_the_store() -> None:
    m = adm.ConcurrencyManager.from_dict(config(rate="60/min", burst=2, tokens="1000/min"))
    store = memory(m)
    semaphore, rate, tokens = m.semaphore("api"), m.rate("api"), m.tokens("api")
    assert isinstance(semaphore, RemoteSemaphore)
    assert semaphore.store is store
    assert isinstance(rate, RemoteTokenBucket)
    assert rate.store is store
    assert isinstance(tokens, RemoteTokenBucket)
    assert tokens.store is store
    # Named as the manager names a limit's limiters: what other processes open.
    assert (semaphore.name, rate.name, tokens.name) == ("api", "api.rate", "api.tokens")
    async with m.limit("api", tokens=600) as bound:
        assert bound is None  # a store's bucket has no reservation to settle
        assert await state(m) == (1, 0)
        assert store.tat_us("api.rate") is not None
        assert store.tat_us("api.tokens") is not None
        async with m.limit("api"):
            assert await state(m) == (2, 0)
            with pytest.raises(adm.AcquireTimeout):  # both permits held, everywhere
                async with m.limit("api", timeout=0):
                    pass
    assert await state(m) == (0, 0)
    # The burst of 2 is spent (the next request is 30 s away): refused now, permit given back.
    with pytest.raises(adm.AcquireTimeout):
        async with m.limit("api", timeout=0):
            pass
    assert await state(m) == (0, 0)
    stats = m.stats()["api"]
    assert (stats.concurrency.admitted, stats.concurrency.timed_out) == (3, 1)
    assert stats.rate is not None
    assert (stats.rate.admitted, stats.rate.timed_out) == (2, 1)
    assert stats.tokens is not None
    assert stats.tokens.admitted_cost == 600


async def test_tokens_refused_after_the_request_was_taken_give_the_permit_back() -> None:
    m = adm.ConcurrencyManager.from_dict(config(rate="60/min", tokens="1000/min"))
    async with m.limit("api", tokens=600):
        pass
    with pytest.raises(adm.AcquireTimeout):
        async with m.limit("api", tokens=600, timeout=0):
            pass
    assert await state(m) == (0, 0)
    stats = m.stats()["api"]
    assert stats.rate is not None
    assert stats.rate.admitted == 2
    assert stats.tokens is not None
    assert stats.tokens.admitted_cost == 600


async def test_an_unbounded_concurrency_stays_in_process_and_the_rate_goes_to_the_store() -> None:
    m = adm.ConcurrencyManager.from_dict(config(concurrency="none", rate="60/min"))
    assert type(m.semaphore("api")) is adm.Semaphore
    assert isinstance(m.rate("api"), RemoteTokenBucket)
    async with m.limit("api"):
        assert m.semaphore("api").in_use == 1
    assert memory(m).calls.get("semaphore_acquire", 0) == 0


async def test_a_policy_puts_its_limits_in_its_store() -> None:
    m = adm.ConcurrencyManager.from_dict(
        {
            "stores": {"test": {"kind": "memory"}},
            "policies": {"shared": {"parent": "openai", "store": "test"}},
            "limits": {"a": {"policy": "shared"}, "b": {"policy": "shared", "store": "none"}},
        }
    )
    assert isinstance(m.rate("a"), RemoteTokenBucket)
    assert type(m.rate("b")) is adm.TokenBucket


async def test_a_cancelled_request_waiting_for_its_rate_gives_its_permit_back() -> None:
    m = adm.ConcurrencyManager.from_dict(config(rate="1/min", burst=1))
    async with m.limit("api"):
        pass
    entered = False

    async def second() -> None:
        nonlocal entered
        async with m.limit("api", timeout=None):  # its turn is a minute away
            entered = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(second)
        await wait_until(lambda: m.rate("api").waiting == 1, "the request asleep on its turn")
        assert await state(m) == (1, 0)  # it holds its permit meanwhile
        tg.cancel_scope.cancel()
    assert not entered
    assert await state(m) == (0, 0)


# -- failure, and the sync paths -------------------------------------------------------------


async def test_on_store_error_modes_from_the_configuration() -> None:
    m = adm.ConcurrencyManager.from_dict(
        {
            "stores": {"test": {"kind": "memory"}},
            "limits": {
                "closed": {"store": "test", "concurrency": 2},
                "open": {"store": "test", "concurrency": 2, "on_store_error": "open"},
                "local": {
                    "store": "test",
                    "concurrency": 4,
                    "on_store_error": "local",
                    "instances": 4,  # this process's share: 1
                },
            },
        }
    )
    memory(m).fail()
    with pytest.raises(adm.StoreUnavailable):
        async with m.limit("closed"):
            pass
    async with m.limit("open"), m.limit("open"), m.limit("open"):
        pass  # admitted without the store, beyond the limit: what "open" means
    async with m.limit("local"):
        with pytest.raises(adm.AcquireTimeout):
            async with m.limit("local", timeout=0):
                pass


async def test_the_sync_admission_in_a_network_store_names_the_limit_and_the_store() -> None:
    m = adm.ConcurrencyManager.from_dict(config())
    with pytest.raises(TypeError) as info, m.limit("api"):
        pass
    message = str(info.value)
    assert message.startswith("the limit 'api' is in the network store 'test' (memory): ")
    assert "async with manager.limit('api')" in message
    assert memory(m).calls == {}  # refused before any round trip


# -- reloads ---------------------------------------------------------------------------------


async def test_a_reload_keeps_the_store_and_the_limiters_whose_settings_hold() -> None:
    m = adm.ConcurrencyManager.from_dict(config(rate="60/min"))
    store, semaphore, rate = m.store("test"), m.semaphore("api"), m.rate("api")
    async with m.limit("api"):
        m.reload(config(rate="60/min", timeout="5s", alert_threshold=0.5))
        assert (m.store("test"), m.semaphore("api"), m.rate("api")) == (store, semaphore, rate)
        assert m.policy("api").timeout == 5.0
    assert await state(m) == (0, 0)


@pytest.mark.parametrize(
    ("change", "field", "was"),
    [
        ({"rate": "30/min"}, "rate", "60/min"),
        ({"burst": 5}, "burst", "none"),
        ({"concurrency": 3}, "concurrency", "2"),
        ({"lease": "10s"}, "lease", "30s"),
        ({"tokens": "500/min"}, "tokens", "1000/min"),
    ],
)
async def test_a_reload_that_changes_what_the_store_holds_is_refused(
    change: dict[str, Any], field: str, was: str
) -> None:
    m = adm.ConcurrencyManager.from_dict(config(rate="60/min", tokens="1000/min"))
    limiters = (m.semaphore("api"), m.rate("api"), m.tokens("api"))
    in_force = m.config
    after = config(**{"rate": "60/min", "tokens": "1000/min", **change})
    with pytest.raises(adm.ConfigError) as info:
        m.reload(after)
    message = str(info.value)
    assert message.startswith(f"<dict>: limits.api.{field}: the limiter 'api")
    assert f"is in store 'test' with {field} {was}," in message
    assert "point [stores.test] at a new place in the same reload" in message
    assert m.config is in_force  # nothing changed
    assert (m.semaphore("api"), m.rate("api"), m.tokens("api")) == limiters


async def test_a_reload_may_add_and_remove_a_limit_s_limiters_in_the_store() -> None:
    m = adm.ConcurrencyManager.from_dict(config(rate="60/min"))
    semaphore = m.semaphore("api")
    m.reload(config(rate="none", tokens="1000/min"))
    assert m.semaphore("api") is semaphore
    assert isinstance(m.tokens("api"), RemoteTokenBucket)
    with pytest.raises(adm.UnknownLimit):
        m.rate("api")
    async with m.limit("api", tokens=10):
        pass


async def test_a_reload_that_changes_the_failure_mode_makes_new_limiters_in_the_same_store() -> (
    None
):
    m = adm.ConcurrencyManager.from_dict(config(rate="60/min"))
    store, semaphore, rate = m.store("test"), m.semaphore("api"), m.rate("api")
    async with m.limit("api"):
        m.reload(config(rate="60/min", on_store_error="open"))
        new = m.semaphore("api")
        assert m.store("test") is store
        assert new is not semaphore
        assert m.rate("api") is not rate
        assert isinstance(new, RemoteSemaphore)
        assert new.on_store_error == "open"
        assert await state(m) == (1, 0)  # the old semaphore's permit, in the same store
    assert await state(m) == (0, 0)  # given back by the object that took it


async def test_a_changed_store_table_makes_a_new_store_and_aclose_closes_every_one(
    closed_stores: list[MemoryStore],
) -> None:
    m = adm.ConcurrencyManager.from_dict(config(rate="60/min"))
    old_store, old_semaphore = m.store("test"), m.semaphore("api")
    assert isinstance(old_semaphore, RemoteSemaphore)
    async with m.limit("api"):
        # A changed table makes a new store (here a new memory), where the limit's limiters
        # are made anew: so another rate is accepted in the same reload.
        changed = config(rate="30/min")
        changed["stores"]["test"]["timeout"] = "50ms"
        m.reload(changed)
        new_store = m.store("test")
        assert new_store is not old_store
        semaphore = m.semaphore("api")
        assert isinstance(semaphore, RemoteSemaphore)
        assert semaphore.store is new_store
        assert closed_stores == []  # the old one serves the request in flight
    assert await old_semaphore.state() == (0, 0)
    await m.aclose()
    assert closed_stores == [new_store, old_store]


async def test_aclose_closes_a_store_no_limit_uses(closed_stores: list[MemoryStore]) -> None:
    m = adm.ConcurrencyManager.from_dict({"stores": {"unused": {"kind": "memory"}}})
    store = m.store("unused")
    m.reload({})
    with pytest.raises(adm.UnknownLimit, match=r"no store named 'unused'"):
        m.store("unused")
    await m.aclose()
    assert closed_stores == [store]


async def test_a_limit_moves_into_a_store_and_back_whole() -> None:
    plain = {"limits": {"api": {"concurrency": 2, "rate": "60/min"}}}
    m = adm.ConcurrencyManager.from_dict(plain)
    own_semaphore, own_rate = m.semaphore("api"), m.rate("api")
    async with m.limit("api"):
        pass
    m.reload(config(rate="60/min"))
    assert isinstance(m.semaphore("api"), RemoteSemaphore)
    assert isinstance(m.rate("api"), RemoteTokenBucket)
    async with m.limit("api"):
        pass
    stats = m.stats()["api"].rate
    assert stats is not None
    assert stats.admitted == 2
    m.reload(plain)
    assert m.semaphore("api") is own_semaphore  # its accounting goes on
    assert type(m.rate("api")) is adm.TokenBucket
    assert m.rate("api") is not own_rate
    with m.limit("api"):  # in this process again: the sync path works
        pass


async def test_a_reload_never_leaves_a_limit_half_in_a_store() -> None:
    plain = {"limits": {"api": {"concurrency": 2, "rate": "60/min"}}}
    m = adm.ConcurrencyManager.from_dict(plain)
    semaphore, rate = m.semaphore("api"), m.rate("api")
    # The semaphore and the requests bucket could be made in the store, not the tokens
    # bucket (a burst that takes too long to refill): the whole reload is refused.
    with pytest.raises(adm.ConfigError, match=r"^<dict>: limits\.api: burst .* too long"):
        m.reload(config(rate="60/min", tokens="1/d", token_burst=100_000))
    assert (m.semaphore("api"), m.rate("api")) == (semaphore, rate)
    assert m.policy("api").store is None
    with m.limit("api"):
        pass


async def test_a_store_named_by_no_table_is_unknown() -> None:
    m = adm.ConcurrencyManager.from_dict({"limits": {"a": {}}})
    with pytest.raises(adm.UnknownLimit) as info:
        m.store("local")
    assert (
        str(info.value)
        .strip("'\"")
        .endswith("no store named 'local'; known: none (<dict> has no [stores.<name>] table)")
    )


# -- the kinds whose modules are elsewhere (redis, postgres) ---------------------------------


class FakeRedis(MemoryStore):
    """What the factory hands the options to, in place of the Redis store."""

    made: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, url: str, *, timeout: float = 0.1, prefix: str = "admission") -> None:
        super().__init__(timeout=timeout)
        FakeRedis.made.append({"url": url, "timeout": timeout, "prefix": prefix})


async def test_a_kind_s_class_is_imported_when_a_table_uses_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = types.ModuleType("admission.stores.redis")
    fake.Redis = FakeRedis  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "admission.stores.redis", fake)
    FakeRedis.made.clear()
    url = "redis://app:pw@cache:6379/0"
    m = adm.ConcurrencyManager.from_dict(
        {
            "stores": {"cache": {"kind": "redis", "url": url, "timeout": "20ms", "prefix": "x"}},
            "limits": {"api": {"store": "cache", "rate": "60/min"}},
        }
    )
    assert FakeRedis.made == [{"url": url, "timeout": 0.02, "prefix": "x"}]
    assert isinstance(m.store("cache"), FakeRedis)
    async with m.limit("api"):
        pass


async def test_a_kind_whose_module_is_missing_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kinds = dict(_sections.STORE_KINDS)
    kinds["redis"] = dataclasses.replace(kinds["redis"], module="admission.stores.not_here")
    monkeypatch.setattr(_sections, "STORE_KINDS", types.MappingProxyType(kinds))
    data = {"stores": {"cache": {"kind": "redis", "url": "redis://cache/0"}}}
    with pytest.raises(adm.ConfigError) as info:
        adm.ConcurrencyManager.from_dict(data)
    assert str(info.value) == (
        "<dict>: stores.cache.kind: this version of admission has no redis store "
        "(admission.stores.not_here)"
    )


async def test_a_store_s_own_refusal_names_its_table(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoDriver:
        def __init__(self, **options: object) -> None:
            raise ModuleNotFoundError(
                "admission.stores.Redis needs redis: pip install 'admission[redis]'", name="redis"
            )

    class Refuses:
        def __init__(self, **options: object) -> None:
            raise ValueError("prefix must be a non-empty str, got ' '")

    data = {"stores": {"cache": {"kind": "redis", "url": "redis://cache/0"}}}
    for cls, expected in (
        (NoDriver, "stores.cache.kind: admission.stores.Redis needs redis: pip install"),
        (Refuses, "stores.cache.prefix: prefix must be a non-empty str"),
    ):
        fake = types.ModuleType("admission.stores.redis")
        fake.Redis = cls  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "admission.stores.redis", fake)
        with pytest.raises(adm.ConfigError) as info:
            adm.ConcurrencyManager.from_dict(data)
        assert str(info.value).startswith(f"<dict>: {expected}")
