"""A URL that names a Redis Cluster: ``redis+cluster://`` (``rediss+cluster://`` for TLS),
the scheme the ``limits`` library reads for the same thing (redis-py's own URLs name one
server: ``RedisCluster.from_url`` takes one node to start from, and its scheme says nothing
of a cluster).

``redis+cluster://[[user]:password@]host[:port][,host[:port]...][/0]``: the nodes to start
from (any of the cluster's; the client finds the others), port 6379 by default. A cluster
has database 0 only; options (``?...``) are not read: pass ``client=RedisCluster(...)`` for
those. This module parses; `admission.stores.redis` makes the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = ["SCHEMES", "ClusterURL", "is_cluster_url", "parse_cluster_url"]

SCHEMES = ("redis+cluster", "rediss+cluster")


@dataclass(frozen=True)
class ClusterURL:
    """What a cluster URL says."""

    nodes: tuple[tuple[str, int], ...]
    """(host, port) of each node to start from, in the URL's order."""
    username: str | None
    password: str | None
    tls: bool
    label: str
    """The URL without its password (``redis+cluster://app:***@h1:7000,h2:7000``)."""


def is_cluster_url(url: str) -> bool:
    """Whether ``url``'s scheme names a Redis Cluster (`SCHEMES`, in any case)."""
    return url.partition("://")[0].lower() in SCHEMES


def parse_cluster_url(url: str) -> ClusterURL:
    """`ClusterURL` of ``url``; `ValueError` naming what is wrong (never quoting the
    password) for no host, a bad port, a database other than 0, or options."""
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"a cluster URL starts with {' or '.join(SCHEMES)}://")
    rest, _, fragment = rest.partition("#")
    rest, query_mark, _ = rest.partition("?")
    if query_mark or fragment:
        raise ValueError(
            "a cluster URL takes no options (?...): pass client=redis.asyncio.RedisCluster(...)"
        )
    netloc, _, path = rest.partition("/")
    if path not in ("", "0"):
        raise ValueError(f"a Redis Cluster has database 0 only, not {path!r}")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    nodes = []
    for host_port in hosts.split(","):
        parsed = urlsplit(f"//{host_port}")
        try:
            port = parsed.port or 6379
        except ValueError:
            raise ValueError(
                f"node {host_port!r}: the port is not a number from 0 to 65535"
            ) from None
        if not parsed.hostname:
            raise ValueError(f"node {host_port!r} of the cluster URL has no host")
        nodes.append((parsed.hostname, port))
    credentials = ""
    if at:
        credentials = f"{userinfo.partition(':')[0]}{':***' if password is not None else ''}@"
    label = f"{scheme}://{credentials}{hosts}"
    return ClusterURL(tuple(nodes), username, password, scheme == "rediss+cluster", label)
