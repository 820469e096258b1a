"""``redis+cluster://`` URLs (admission.stores._cluster_url): what the Redis store makes of
them without a server (the cluster itself: tests/integration/test_redis_store_cluster.py)."""

from __future__ import annotations

import pytest

import admission as adm
from admission.stores._cluster_url import parse_cluster_url


def test_a_cluster_url_names_its_nodes_credentials_and_tls() -> None:
    parsed = parse_cluster_url("REDISS+cluster://app:s3cr%40t@h1:7000,[::1]:7001,h3/0")
    assert parsed.nodes == (("h1", 7000), ("::1", 7001), ("h3", 6379))
    assert (parsed.username, parsed.password, parsed.tls) == ("app", "s3cr@t", True)
    assert parsed.label == "rediss+cluster://app:***@h1:7000,[::1]:7001,h3"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+cluster://", "has no host"),
        ("redis+cluster://h1,,h2", "has no host"),
        ("redis+cluster://h1:port", "the port is not a number"),
        ("redis+cluster://h1/2", "database 0 only"),
        ("redis+cluster://:pw@h1?ssl_cert_reqs=none", "takes no options"),
    ],
)
def test_a_cluster_url_it_cannot_use_is_refused_saying_why(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as refused:
        adm.stores.Redis(url)
    assert "pw" not in str(refused.value)


def test_the_store_makes_a_cluster_client_of_its_own_and_keeps_the_password_out() -> None:
    pytest.importorskip("redis")
    import redis.asyncio

    store = adm.stores.Redis("redis+cluster://app:s3cret@10.0.0.7:7000,10.0.0.8:7000")
    assert isinstance(store._client, redis.asyncio.RedisCluster)
    assert store.spread_over_servers
    assert not store.rate_batch_is_one_round_trip  # a call per key's slot
    assert store.label == "redis+cluster://app:***@10.0.0.7:7000,10.0.0.8:7000"
    assert "s3cret" not in repr(store)
    assert [(n.host, n.port) for n in store._client.startup_nodes] == [
        ("10.0.0.7", 7000),
        ("10.0.0.8", 7000),
    ]
