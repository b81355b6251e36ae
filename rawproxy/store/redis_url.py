"""The Redis store's URL, read and checked without the Redis client library.

The forms (`--store` / `PROXY_STORE`):

- `redis://[user:password@]host[:port][/db]`: one Redis node (`rediss://` over TLS);
- `unix://[user:password@]/path/to/redis.sock[?db=N]`: one node on a Unix socket;
- `redis+cluster://[user:password@]host:port[,host:port...]`: a Redis Cluster, found
  from these seed nodes (`rediss+cluster://` over TLS).

Reading it needs no optional package, so a malformed URL is a setting error at start-up
(exit code 2) whether or not the `redis` extra is installed. Nothing here, nor any message
it raises, ever shows the credentials: `shown` is the URL without them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from ..core.urls import without_userinfo

SINGLE_SCHEMES = ("redis", "rediss", "unix")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
DEFAULT_PORT = 6379


class RedisURLError(ValueError):
    """A Redis URL that cannot work; the message shows the URL without its credentials."""


@dataclass(frozen=True, slots=True)
class RedisTarget:
    url: str = field(repr=False)       # as given, credentials included: never logged
    shown: str                         # the same without credentials: logs, errors, /health
    cluster: bool
    tls: bool
    nodes: tuple[tuple[str, int], ...]  # the one node, or the cluster's seed nodes (empty for unix://)
    db: int = 0
    socket_path: str = ""
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)


def is_redis_url(spec: str) -> bool:
    scheme = spec.partition("://")[0].lower()
    return "://" in spec and scheme in SINGLE_SCHEMES + CLUSTER_SCHEMES


def _credentials(netloc: str) -> tuple[str | None, str | None, str]:
    """(username, password, the rest of netloc), percent-escapes decoded."""
    if "@" not in netloc:
        return None, None, netloc
    userinfo, _, rest = netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if colon and password else None), rest


def _host_port(item: str, shown: str, default_port: int | None) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [IPv6]:port
        host, _, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise RedisURLError(f"reasoning store {shown}: {item!r} is not host:port")
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise RedisURLError(f"reasoning store {shown}: a node has no host")
    if not port_text:
        if default_port is None:
            raise RedisURLError(f"reasoning store {shown}: node {host!r} needs a port (host:port)")
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise RedisURLError(f"reasoning store {shown}: port {port_text!r} is not a port number")
    return host, int(port_text)


def _db(text: str, shown: str) -> int:
    if not text.isdigit():
        raise RedisURLError(f"reasoning store {shown}: the database {text!r} is not a number (/0, /1, ...)")
    return int(text)


def parse_redis_url(url: str) -> RedisTarget:
    """The target a Redis store URL names; RedisURLError when it is malformed."""
    shown = without_userinfo(url)
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SINGLE_SCHEMES + CLUSTER_SCHEMES:
        raise RedisURLError(f"reasoning store {shown}: not a redis://, rediss://, unix:// or redis+cluster:// URL")
    tls = scheme.startswith("rediss")
    if scheme in CLUSTER_SCHEMES:
        netloc, _, tail = rest.partition("/")
        if tail.strip("/") not in ("", "0"):
            raise RedisURLError(f"reasoning store {shown}: a Redis Cluster has only database 0")
        user, password, hosts = _credentials(netloc)
        nodes = tuple(_host_port(item, shown, None) for item in hosts.split(",") if item.strip())
        if not nodes:
            raise RedisURLError(f"reasoning store {shown}: name at least one cluster node (host:port,host:port)")
        return RedisTarget(url, shown, True, tls, nodes, 0, "", user, password)

    parts = urlsplit(url)
    user, password, hostport = _credentials(parts.netloc)
    query = parse_qs(parts.query)
    if scheme == "unix":
        if hostport or not parts.path:
            raise RedisURLError(f"reasoning store {shown}: write a socket as unix:///path/to/redis.sock")
        db = _db(query["db"][0], shown) if "db" in query else 0
        return RedisTarget(url, shown, False, False, (), db, parts.path, user, password)
    if "," in hostport:
        raise RedisURLError(f"reasoning store {shown}: several nodes are a cluster: redis+cluster://host:port,host:port")
    node = _host_port(hostport, shown, DEFAULT_PORT)
    path = parts.path.strip("/")
    db = _db(path, shown) if path else 0
    if "db" in query:
        db = _db(query["db"][0], shown)
    return RedisTarget(url, shown, False, tls, (node,), db, "", user, password)
