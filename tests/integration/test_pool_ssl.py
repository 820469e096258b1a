"""The SSL choice against a real PostgreSQL serving TLS (certificates made by openssl).

The server's ``pg_stat_ssl`` says whether each session really is encrypted.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres import PostgresServer, run

import admission as adm


def openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is needed to make the test certificates")
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> None:
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt",
        cwd=directory,
    )  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate it signed for 127.0.0.1/localhost, and an unrelated CA."""
    d = tmp_path_factory.mktemp("certs")
    make_ca(d, "test-ca")
    make_ca(d, "other-ca")
    (d / "san.ext").write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", "server.key", "-out", "server.csr", cwd=d,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "test-ca.crt", "-CAkey", "test-ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt", cwd=d,
    )  # fmt: skip
    return d


@pytest.fixture(scope="module")
def pg(certs: Path) -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.init()
        server.enable_ssl(certs / "server.crt", certs / "server.key")
        with server:
            yield server
    finally:
        server.cleanup()


def encrypted(pg: PostgresServer, **config: object) -> tuple[bool, str]:
    """Whether the pool's session is encrypted (per the server), and the logged choice."""

    async def scenario() -> tuple[bool, str]:
        pools = adm.PoolManager({"db": adm.PoolConfig(pg.app_dsn(), **config)})  # type: ignore[arg-type]
        async with pools, pools.connection("db") as conn:
            used: bool = await conn.fetchval(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            )
        from admission.pools._managed import ManagedPool

        managed: ManagedPool = pools._get("db")
        return used, str(managed.ssl)

    return run(scenario())


def test_auto_is_off_on_loopback(pg: PostgresServer) -> None:
    assert encrypted(pg) == (False, "ssl=disable (auto: loopback host)")


def test_explicit_require_wins(pg: PostgresServer) -> None:
    assert encrypted(pg, ssl="require") == (True, "ssl=require (explicit: PoolConfig.ssl)")


def test_auto_with_a_root_cert_verifies_the_server(pg: PostgresServer, certs: Path) -> None:
    result = encrypted(pg, ssl_root_cert=certs / "test-ca.crt")
    assert result == (True, "ssl=verify-full (auto: ssl_root_cert configured)")


def test_a_server_the_root_cert_does_not_vouch_for_is_refused(
    pg: PostgresServer, certs: Path
) -> None:
    with pytest.raises(adm.PoolConnectError, match="certificate verify failed"):
        encrypted(pg, ssl_root_cert=certs / "other-ca.crt")


def test_sslmode_in_the_dsn_beats_the_root_cert(pg: PostgresServer, certs: Path) -> None:
    async def scenario() -> bool:
        config = adm.PoolConfig(pg.app_dsn() + "?sslmode=disable", ssl_root_cert=certs / "x")
        async with adm.PoolManager({"db": config}) as pools, pools.connection("db") as conn:
            used: bool = await conn.fetchval(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            )
            return used

    assert run(scenario()) is False
