"""The pure parts: retry policy, Retry-After parsing, metrics text, redaction, settings."""

from __future__ import annotations

import pytest

from rawproxy.core.errors import redact
from rawproxy.core.metrics import Counter, Histogram, Metrics
from rawproxy.core.settings import ConfigError
from rawproxy.service.cli import load_settings
from rawproxy.upstream.retry import RETRY_STATUSES, RetryPolicy, parse_retry_after


def test_retry_policy_bounds_attempts_and_honours_retry_after():
    policy = RetryPolicy(retries=2, base_delay=0.25, max_wait=10)
    assert RETRY_STATUSES == {429, 500, 502, 503, 529}
    for status in (400, 401, 404, 413, 504):
        assert policy.delay(0, status) is None  # an answer, not a hiccup
    assert 0.125 <= policy.delay(0, 503, rand=lambda: 0.0) <= 0.25
    assert policy.delay(1, 503, rand=lambda: 1.0) == 0.5  # doubles
    assert policy.delay(2, 503) is None  # two retries, then the answer stands
    assert policy.delay(0, None) is not None  # could not connect
    assert policy.delay(0, 429, retry_after=3.0) == 3.0  # exactly as asked
    assert policy.delay(0, 429, retry_after=11.0) is None  # too long: the client's SDK waits instead
    assert RetryPolicy(retries=0).delay(0, 503) is None


def test_retry_after_forms():
    assert parse_retry_after(b"2") == 2.0
    assert parse_retry_after(b"0.5") == 0.5
    assert parse_retry_after(b"2", b"1500") == 1.5  # retry-after-ms is finer: it wins
    assert parse_retry_after(b"Wed, 21 Oct 2015 07:28:00 GMT", now=lambda: 1445412470.0) == 10.0
    assert parse_retry_after(b"-3") == 0.0
    assert parse_retry_after(b"soon") is None and parse_retry_after(None) is None


def test_metrics_render_prometheus_text():
    m = Metrics(version="1.2.3", worker="w1")
    m.requests.inc("/v1/messages", "200")
    m.requests.inc("/v1/messages", "200")
    m.upstream_ttfb.observe(0.3)
    m.upstream_ttfb.observe(99999)
    m.repairs.inc('weird"kind\\')
    text = m.render().decode()
    assert 'rawproxy_requests_total{route="/v1/messages",status="200"} 2' in text
    assert 'rawproxy_upstream_ttfb_seconds_bucket{le="0.25"} 0' in text
    assert 'rawproxy_upstream_ttfb_seconds_bucket{le="0.5"} 1' in text
    assert 'rawproxy_upstream_ttfb_seconds_bucket{le="+Inf"} 2' in text
    assert "rawproxy_upstream_ttfb_seconds_count 2" in text
    assert 'rawproxy_repairs_total{kind="weird\\"kind\\\\"} 1' in text
    assert 'rawproxy_info{version="1.2.3",worker="w1"} 1' in text
    assert text.endswith("\n")
    c, h = Counter("x_total", "x", ("a",)), Histogram("y", "y", (1.0,))
    assert list(c.samples()) == [] and list(h.samples()) == []


def test_redact():
    assert redact("bad key sk-123 given", "sk-123") == "bad key <redacted> given"
    assert redact("nothing here", "") == "nothing here"


def test_new_settings_from_flags_and_environment():
    s = load_settings([], {})
    assert (s.header_timeout, s.keepalive_timeout, s.request_timeout, s.connect_timeout, s.read_timeout) == (
        30.0, 75.0, 3600.0, 10.0, 600.0)
    assert (s.max_body_bytes, s.max_header_bytes, s.max_connections) == (32 * 1024 * 1024, 65536, 4096)
    assert (s.retries, s.retry_max_wait, s.graceful_timeout, s.log_format) == (2, 10.0, 30.0, "text")
    assert s.access_keys == () and s.outbound_proxy == "" and not s.allow_open
    env = {"PROXY_HEADER_TIMEOUT": "5", "PROXY_KEEPALIVE_TIMEOUT": "6", "PROXY_REQUEST_TIMEOUT": "7",
           "PROXY_MAX_HEADER_BYTES": "1000", "PROXY_MAX_CONNECTIONS": "9", "PROXY_RETRIES": "0",
           "PROXY_RETRY_MAX_WAIT": "3", "PROXY_GRACEFUL_TIMEOUT": "4", "LOG_FORMAT": "JSON",
           "PROXY_API_KEYS": " a , b ,,", "PROXY_ALLOW_OPEN": "yes"}
    s = load_settings([], env)
    assert (s.header_timeout, s.keepalive_timeout, s.request_timeout, s.max_header_bytes, s.max_connections) == (
        5.0, 6.0, 7.0, 1000, 9)
    assert (s.retries, s.retry_max_wait, s.graceful_timeout, s.log_format) == (0, 3.0, 4.0, "json")
    assert s.access_keys == ("a", "b") and s.allow_open
    assert "'a'" not in repr(s)  # access keys stay out of reprs, like the upstream key
    s = load_settings(["--retries", "5", "--graceful-timeout", "1", "--log-format", "text",
                       "--proxy-api-keys", "z"], env)
    assert (s.retries, s.graceful_timeout, s.log_format, s.access_keys) == (5, 1.0, "text", ("z",))


@pytest.mark.parametrize("env,needle", [
    ({"PROXY_RETRIES": "-1"}, "PROXY_RETRIES"),
    ({"PROXY_REQUEST_TIMEOUT": "0"}, "PROXY_REQUEST_TIMEOUT"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ({"PROXY_MAX_CONNECTIONS": "many"}, "PROXY_MAX_CONNECTIONS"),
])
def test_bad_new_settings_say_what_is_wrong(env, needle):
    with pytest.raises(ConfigError, match=needle):
        load_settings([], env)
