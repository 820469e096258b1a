"""ConcurrencyManager owning PoolManager pools (``[pools.NAME]``), against a real PostgreSQL:
configuration, connections, the policy's timeout, reloads that keep the pool, clear errors."""

from __future__ import annotations

import asyncio
import logging
import traceback
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from postgres import APP_PASSWORD, PostgresServer, run, sessions, wait_until

import admission as adm

ENV = "ADM_TEST_RAG_DSN"
APP = "adm-test-manager-pools"


def toml(path: Path, extra: str = "", **pool: str) -> Path:
    """A configuration file with the limit and the pool ``rag``; ``pool`` overrides the
    pool's settings (TOML values, as text)."""
    settings = {
        "dsn_env": f'"{ENV}"',
        "min_size": "1",
        "max_size": "2",
        "application_name": f'"{APP}"',
        **pool,
    }
    lines = "\n".join(f"{key} = {value}" for key, value in settings.items())
    path.write_text(
        f"""{extra}
[limits.rag]
policy = "database"
concurrency = 4

[pools.rag]
{lines}
"""
    )
    return path


def test_config_file_pool_connection_and_reload_that_keeps_the_pool(
    pg: PostgresServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    env = {ENV: pg.app_dsn()}
    path = toml(tmp_path / "admission.toml")
    m = adm.ConcurrencyManager.from_file(path, env=env)
    # The database policy's timeout is the pool's acquire_timeout.
    assert m.config.pools["rag"].acquire_timeout == 10.0
    for shown in (repr(m.config), repr(m.pools)):
        assert "s3cr" not in shown
        assert "***" in shown

    async def scenario() -> None:
        monitor = await asyncpg.connect(pg.dsn())
        try:
            async with m:
                pools = m.pools
                async with m.limit("rag"), m.connection("rag") as conn:
                    assert await conn.fetchval("SELECT current_user") == "app"
                async with pools.transaction("rag") as conn:
                    await conn.execute("CREATE TABLE IF NOT EXISTS mp (id int)")
                    await conn.execute("INSERT INTO mp VALUES (1)")
                assert await sessions(monitor, APP) == 1

                # Reload: a limit and the policy's timeout change; the pool stays (same
                # object, same connection) and takes the new timeout.
                m.reload(
                    toml(path, extra='[policies.database]\ntimeout = "200ms"'),
                )
                assert m.pools is pools
                assert m.semaphore("rag").limit == 4
                assert m.policy("rag").timeout == 0.2
                assert m.config.pools["rag"].acquire_timeout == 0.2
                assert await sessions(monitor, APP) == 1
                release = asyncio.Event()
                held = 0

                async def hold() -> None:
                    nonlocal held
                    async with m.connection("rag"):
                        held += 1
                        await release.wait()

                holders = [asyncio.create_task(hold()) for _ in range(2)]
                await wait_until(lambda: held == 2, "both connections held")
                with pytest.raises(adm.PoolTimeout, match=r"within 0\.2 s"):
                    async with m.connection("rag"):
                        pytest.fail("a third connection from a pool of 2")
                release.set()
                await asyncio.gather(*holders)

                # An explicit acquire_timeout wins over the policy's.
                m.reload(toml(path, acquire_timeout='"3s"'))
                assert m.pools is pools
                assert m.config.pools["rag"].acquire_timeout == 3.0
                async with m.connection("rag") as conn:
                    assert await conn.fetchval("SELECT count(*) FROM mp") == 1
                assert pools.stats("rag").state == "up"
            assert pools.stats("rag").state == "closed"
        finally:
            await monitor.close()

    run(scenario())
    assert APP_PASSWORD not in caplog.text
    assert "s3cr" not in caplog.text


def test_reloads_that_would_drop_or_rebuild_the_pool_are_refused(
    pg: PostgresServer, tmp_path: Path
) -> None:
    env = {ENV: pg.app_dsn()}
    path = toml(tmp_path / "admission.toml")
    m = adm.ConcurrencyManager.from_file(path, env=env)
    pools, config = m.pools, m.config

    with pytest.raises(adm.ConfigError, match=r"pools: pool 'rag': max_size cannot change"):
        m.reload(toml(tmp_path / "bigger.toml", max_size="3"))
    other = {ENV: pg.dsn()}  # another user: the dsn changes
    with pytest.raises(adm.ConfigError, match=r"pool 'rag': dsn cannot change") as info:
        m.reload(adm.Config.from_file(path, env=other))
    assert "s3cr" not in str(info.value)
    with pytest.raises(adm.ConfigError, match=r"pools cannot be removed"):
        m.reload({"limits": {"rag": {"policy": "database", "concurrency": 1}}})
    with pytest.raises(adm.ConfigError, match=r"added 'more'"):
        m.reload(
            adm.Config.from_dict(
                {
                    "limits": {"rag": {"policy": "database", "concurrency": 1}},
                    "pools": {
                        "rag": {"dsn_env": ENV, "max_size": 2, "application_name": APP},
                        "more": {"dsn_env": ENV},
                    },
                },
                env=env,
            )
        )
    # Nothing changed, not even the limit the refused reloads also set.
    assert (m.pools, m.config, m.semaphore("rag").limit) == (pools, config, 4)

    plain = adm.ConcurrencyManager.from_dict({"limits": {"rag": {}}})
    with pytest.raises(adm.ConfigError, match=r"pools cannot be added by a reload"):
        plain.reload(adm.Config.from_file(path, env=env))


def test_clear_errors(pg: PostgresServer, tmp_path: Path) -> None:
    path = toml(tmp_path / "admission.toml")
    with pytest.raises(
        adm.ConfigError,
        match=rf"admission\.toml: pools\.rag\.dsn_env: the environment variable {ENV} is not set",
    ):
        adm.ConcurrencyManager.from_file(path, env={})
    wrong = pg.app_dsn(password="not-the-" + APP_PASSWORD)
    bad_size = toml(tmp_path / "bad.toml", min_size="5")
    with pytest.raises(
        adm.ConfigError, match=r"pools\.rag: min_size \(5\) must not exceed max_size \(2\)"
    ):
        adm.ConcurrencyManager.from_file(bad_size, env={ENV: wrong})
    with pytest.raises(adm.ConfigError, match=r"pools\.rag\.max_size: expected an integer"):
        adm.ConcurrencyManager.from_dict({"pools": {"rag": {"dsn": wrong, "max_size": "big"}}})
    with pytest.raises(adm.ConfigError, match=r"pools\.rag: expected exactly one of dsn"):
        adm.ConcurrencyManager.from_dict({"pools": {"rag": {"min_size": 1}}})
    with pytest.raises(
        adm.ConfigError, match=r"pools\.rag: dsn must be a URL .*'mysql://u:\*\*\*@h/db'"
    ):
        adm.ConcurrencyManager.from_dict({"pools": {"rag": {"dsn": "mysql://u:pw@h/db"}}})
    with pytest.raises(
        adm.ConfigError, match=r"pools\.rag\.policy: .*\(did you mean 'database'\?\)"
    ):
        adm.ConcurrencyManager.from_dict({"pools": {"rag": {"dsn": wrong, "policy": "databse"}}})

    m = adm.ConcurrencyManager.from_dict({"pools": {"rag": {"dsn": wrong}}})
    with pytest.raises(adm.UnknownPool, match=r"no pool named 'reports' \(configured: 'rag'\)"):
        m.connection("reports")
    empty = adm.ConcurrencyManager.from_dict({"limits": {"rag": {}}})
    with pytest.raises(adm.UnknownPool, match=r"add a \[pools\.rag\] table"):
        empty.connection("rag")
    with pytest.raises(adm.UnknownPool, match=r"no pool is configured"):
        _ = empty.pools

    async def wrong_password() -> None:
        with pytest.raises(adm.PoolConnectError, match="password authentication failed") as info:
            async with m:
                pytest.fail("opened with a wrong password")
        text = "".join(traceback.format_exception(info.value))
        assert "not-the-" not in text
        assert "s3cr" not in text

    run(wrong_password())
