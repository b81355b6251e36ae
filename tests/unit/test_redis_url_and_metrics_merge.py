"""The Redis store's URL forms and value encoding, the store settings, and how several
workers' metrics add up into one scrape."""

from __future__ import annotations

import pytest

from rawproxy.core.metrics import Metrics
from rawproxy.core.reasoning import Reasoning
from rawproxy.core.settings import ConfigError
from rawproxy.service.cli import load_settings
from rawproxy.store.redis import decode, encode
from rawproxy.store.redis_url import RedisURLError, parse_redis_url


def test_each_url_form_names_its_nodes_database_and_credentials():
    t = parse_redis_url("redis://app:p%40ss@cache.internal:6380/2")
    assert (t.nodes, t.db, t.username, t.password, t.tls, t.cluster) == ((("cache.internal", 6380),), 2, "app",
                                                                          "p@ss", False, False)
    assert t.shown == "redis://cache.internal:6380/2"
    assert parse_redis_url("redis://localhost").nodes == (("localhost", 6379),)
    assert parse_redis_url("rediss://:pw@[::1]:7000/0").nodes == (("::1", 7000),)
    assert parse_redis_url("rediss://:pw@[::1]:7000/0").tls
    sock = parse_redis_url("unix://:pw@/run/redis/redis.sock?db=3")
    assert (sock.socket_path, sock.db, sock.password, sock.nodes) == ("/run/redis/redis.sock", 3, "pw", ())
    c = parse_redis_url("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001")
    assert c.cluster and not c.tls and c.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert c.shown == "redis+cluster://10.0.0.1:7000,10.0.0.2:7001"
    assert parse_redis_url("rediss+cluster://h:1").tls
    assert "pw" not in repr(c) and "pw" not in repr(sock)


@pytest.mark.parametrize("url, why", [
    ("redis://:hunter2@host:port/0", "not a port number"),
    ("redis://:hunter2@host:99999/0", "not a port number"),
    ("redis://:hunter2@host/zero", "is not a number"),
    ("redis://:hunter2@/0", "has no host"),
    ("redis://:hunter2@a:1,b:2/0", "several nodes are a cluster"),
    ("redis+cluster://:hunter2@a", "needs a port"),
    ("redis+cluster://:hunter2@a:1/1", "only database 0"),
    ("redis+cluster://:hunter2@/", "at least one cluster node"),
    ("unix://:hunter2@host/sock", "unix:///path"),
])
def test_a_malformed_url_is_refused_without_showing_the_password(url, why):
    with pytest.raises(RedisURLError) as err:
        parse_redis_url(url)
    assert why in str(err.value) and "hunter2" not in str(err.value)
    with pytest.raises(ConfigError) as cfg:
        load_settings(["--store", url], {})
    assert why in str(cfg.value) and "hunter2" not in str(cfg.value)


def test_store_settings_from_flags_and_environment():
    s = load_settings([], {"PROXY_STORE": "redis://:pw@127.0.0.1:6379/0", "PROXY_STORE_TTL": "90"})
    assert s.store == "redis://:pw@127.0.0.1:6379/0" and s.store_ttl == 90.0
    assert "pw" not in repr(s)  # the URL may carry a password: never in a repr
    s = load_settings(["--store", "redis+cluster://a:1,b:2", "--store-ttl", "5", "--workers", "3"], {})
    assert s.store == "redis+cluster://a:1,b:2" and s.store_ttl == 5.0  # shared by workers: allowed
    assert load_settings([], {}).store_ttl == 24 * 3600.0
    with pytest.raises(ConfigError, match="PROXY_STORE_TTL must be positive"):
        load_settings(["--store-ttl", "0"], {})
    with pytest.raises(ConfigError, match="memory, sqlite:PATH or a redis:// URL"):
        load_settings(["--store", "memcached://h:1"], {})


def test_values_are_compact_json_and_anything_else_reads_as_missing():
    plain, signed = Reasoning("thinking «ü»\n"), Reasoning("t", "sig==")
    assert encode(plain) == '["thinking «ü»\\n"]'.encode()
    assert decode(encode(plain)) == plain and decode(encode(signed)) == signed
    for foreign in (b"not json", b"{}", b"[]", b"[1]", b'["a","b","c"]'):
        assert decode(foreign) is None


def _worker(name: str, requests: int, open_streams: int) -> Metrics:
    m = Metrics(version="9.9", worker=name)
    for _ in range(requests):
        m.requests.inc("/v1/messages", "200")
        m.request_seconds.observe(0.3, "/v1/messages")
    m.open_streams.set(open_streams)
    return m


def test_workers_metrics_add_up_and_per_worker_figures_keep_their_worker():
    a, b, c = _worker("0", 3, 1), _worker("1", 4, 0), _worker("2", 0, 2)
    text = a.render([b.snapshot(), c.snapshot()]).decode()
    assert 'rawproxy_requests_total{route="/v1/messages",status="200"} 7' in text
    assert 'rawproxy_request_duration_seconds_count{route="/v1/messages"} 7' in text
    assert 'rawproxy_request_duration_seconds_bucket{route="/v1/messages",le="0.25"} 0' in text
    assert 'rawproxy_request_duration_seconds_bucket{route="/v1/messages",le="0.5"} 7' in text
    for worker, streams in (("0", 1), ("1", 0), ("2", 2)):
        assert f'rawproxy_open_streams{{worker="{worker}"}} {streams}' in text
        assert f'rawproxy_info{{version="9.9",worker="{worker}"}} 1' in text
    assert text.count("# TYPE rawproxy_requests_total counter") == 1
    # One process alone renders as before: no worker label on open streams.
    assert "rawproxy_open_streams 1" in a.render().decode()


def test_a_peer_snapshot_of_another_shape_is_left_out_not_mislabelled():
    a, b = _worker("0", 2, 0), _worker("1", 5, 0)
    odd = b.snapshot()
    for family in odd["families"]:
        if family["name"] == "rawproxy_request_duration_seconds":
            family["buckets"] = [1.0]  # another version's buckets
        if family["name"] == "rawproxy_requests_total":
            family["values"] = "garbage"
    text = a.render([odd]).decode()
    assert 'rawproxy_request_duration_seconds_count{route="/v1/messages"} 2' in text
    assert 'rawproxy_requests_total{route="/v1/messages",status="200"} 2' in text
