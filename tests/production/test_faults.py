"""Upstream faults (simulator fault injection): refused, reset mid-stream, stalled,
rate-limited, too slow overall. Every failure reaches the client in its own dialect, and
a stream cut after its start never looks complete to either SDK."""

from __future__ import annotations

import json
import time

import anthropic
import httpx
import openai
import pytest

from ..conftest import free_port
from .support import (
    ANTHROPIC_BODY,
    OPENAI_BODY,
    connect,
    dechunk,
    fsim,
    health_ok,
    metric,
    proxies,
    raw_request,
    read_until_closed,
    sim,
    split_response,
    start_raw_proxy,
)

_ = (fsim, sim, proxies)  # fixtures


def sdk_clients(url: str):
    a = anthropic.Anthropic(base_url=url, api_key="any", max_retries=0, timeout=20)
    o = openai.OpenAI(base_url=url + "/v1", api_key="any", max_retries=0, timeout=20)
    return a, o


def test_refused_upstream_is_a_502_in_each_dialect_within_the_connect_timeout(tmp_path):
    closed = free_port()  # bound once then released: nothing listens there
    url, proc = start_raw_proxy(tmp_path, "--upstream", f"http://127.0.0.1:{closed}/anthropic",
                                "--api-key", "sk-up", "--connect-timeout", "2")
    try:
        started = time.monotonic()
        r = httpx.post(url + "/v1/messages", json=ANTHROPIC_BODY, timeout=10)
        elapsed = time.monotonic() - started
        assert r.status_code == 502 and r.json()["type"] == "error"
        assert r.json()["error"]["type"] == "api_error" and f"127.0.0.1:{closed}" in r.json()["error"]["message"]
        assert elapsed < 2.0, elapsed  # refused at once; the retries' backoff stays under a second

        r = httpx.post(url + "/v1/chat/completions", json=OPENAI_BODY, timeout=10)
        assert r.status_code == 502 and "unreachable" in r.json()["error"]["message"]
        # Connect errors are retried (2 by default) before the client hears of them.
        assert metric(url, "rawproxy_upstream_retries_total") == 4
        assert health_ok(url)
    finally:
        proc.stop()


@pytest.mark.parametrize("fmt", ["anthropic", "openai"])
def test_upstream_reset_mid_stream_makes_both_sdks_raise(sim, proxies, fmt):
    proxy = proxies(fmt, sim=sim)
    sim.fault("reset-after=3")
    a, o = sdk_clients(proxy.url)

    with pytest.raises(anthropic.APIError):
        with a.messages.stream(**ANTHROPIC_BODY) as stream:
            stream.get_final_message()
    with pytest.raises(openai.APIError):
        for _ in o.chat.completions.create(**OPENAI_BODY, stream=True):
            pass

    # On the wire: an error event, no final chunk, and the proxy closes the connection.
    for path, body, marker in (("/v1/messages", ANTHROPIC_BODY, b"event: error\n"),
                               ("/v1/chat/completions", OPENAI_BODY, b'data: {"error"')):
        sock = connect(proxy.url)
        sock.sendall(raw_request(proxy.url, "POST", path, json.dumps({**body, "stream": True}).encode(),
                                 {"content-type": "application/json"}))
        status, headers, rest = split_response(read_until_closed(sock))
        sock.close()
        assert status == 200 and headers["transfer-encoding"] == "chunked"
        payload, complete = dechunk(rest)
        assert not complete, "a cut stream must not end with the last chunk"
        assert marker in payload and b"message_stop" not in payload and b"[DONE]" not in payload
    assert metric(proxy.url, "rawproxy_streams_total") >= 4 and metric(proxy.url, "rawproxy_open_streams") == 0

    sim.fault("")
    with a.messages.stream(**ANTHROPIC_BODY) as stream:  # and the next request is fine
        assert stream.get_final_message().stop_reason == "end_turn"


def test_stalled_upstream_fires_the_read_timeout(sim, proxies):
    proxy = proxies("openai", "--read-timeout", "1", sim=sim)
    sim.fault("stall-after=2;seconds=4")
    a, o = sdk_clients(proxy.url)

    started = time.monotonic()
    with pytest.raises(anthropic.APIError, match="read timeout"):
        with a.messages.stream(**ANTHROPIC_BODY) as stream:
            stream.get_final_message()
    assert 0.9 < time.monotonic() - started < 3.0

    started = time.monotonic()
    r = httpx.post(proxy.url + "/v1/chat/completions", json=OPENAI_BODY, timeout=10)  # not streamed
    assert r.status_code == 504 and "timed out" in r.json()["error"]["message"]
    assert 0.9 < time.monotonic() - started < 3.0
    assert health_ok(proxy.url)


def test_429_then_success_is_retried_after_retry_after(sim, proxies):
    proxy = proxies("anthropic", sim=sim)
    a, o = sdk_clients(proxy.url)  # the SDKs' own retries are off: only the proxy retries

    sim.fault("status=429;retry-after=1;times=1")
    started = time.monotonic()
    message = a.messages.create(**ANTHROPIC_BODY)
    waited = time.monotonic() - started
    assert message.stop_reason == "end_turn"
    assert 1.0 <= waited < 2.0, waited  # Retry-After: 1 honoured, not more
    assert metric(proxy.url, 'rawproxy_upstream_retries_total{reason="429"}') == 1

    sim.fault("status=503;times=2")  # two overloads, then an answer: backoff without Retry-After
    chunks = list(o.chat.completions.create(**OPENAI_BODY, stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert metric(proxy.url, 'rawproxy_upstream_retries_total{reason="503"}') == 2

    sim.fault("status=529")  # overloaded for good: after the retries, the client hears it
    with pytest.raises(anthropic.APIStatusError) as err:
        a.messages.create(**ANTHROPIC_BODY)
    assert err.value.status_code == 529 and err.value.body["error"]["type"] == "overloaded_error"

    sim.fault("status=429;retry-after=30;times=1")  # longer than the proxy waits: the client decides
    started = time.monotonic()
    r = httpx.post(proxy.url + "/v1/messages", json=ANTHROPIC_BODY, timeout=10)
    assert r.status_code == 429 and r.headers["retry-after"] == "30"
    assert r.json()["error"]["type"] == "rate_limit_error" and time.monotonic() - started < 1.0


def test_whole_request_ceiling_cuts_a_slow_request_in_its_dialect(sim, proxies):
    proxy = proxies("anthropic", "--request-timeout", "1.5", sim=sim)
    a, o = sdk_clients(proxy.url)

    sim.fault("slow-first-byte=4")  # nothing at all within the ceiling
    started = time.monotonic()
    r = httpx.post(proxy.url + "/v1/chat/completions", json=OPENAI_BODY, timeout=10)
    assert r.status_code == 504 and "limit of 1.5 s" in r.json()["error"]["message"]
    assert time.monotonic() - started < 3.0

    sim.fault("stall-after=3;seconds=4")  # a stream that started, then went quiet
    with pytest.raises(anthropic.APIError, match="limit of 1.5 s"):
        with a.messages.stream(**ANTHROPIC_BODY) as stream:
            stream.get_final_message()
    with pytest.raises(openai.APIError, match="limit of 1.5 s"):
        for _ in o.chat.completions.create(**OPENAI_BODY, stream=True):
            pass
    assert health_ok(proxy.url)


def test_a_full_upstream_pool_is_a_503_that_says_so(sim, proxies):
    """One pool slot held by a stalled stream: the next request may not wait forever."""
    import threading

    proxy = proxies("openai", "--upstream-connections", "1", "--connect-timeout", "0.5", sim=sim)
    sim.fault("stall-after=2;seconds=3")
    holder = threading.Thread(target=lambda: httpx.post(
        proxy.url + "/v1/chat/completions", json={**OPENAI_BODY, "stream": True}, timeout=10))
    holder.start()
    time.sleep(0.3)  # the stream has its connection and stalls
    started = time.monotonic()
    r = httpx.post(proxy.url + "/v1/chat/completions", json=OPENAI_BODY, timeout=10)
    waited = time.monotonic() - started
    holder.join()
    assert r.status_code == 503 and "--upstream-connections" in r.json()["error"]["message"]
    assert 0.4 < waited < 2.0


def test_a_responses_stream_cut_by_the_proxy_ends_with_response_failed(sim, proxies):
    """The server's own cut (request ceiling) reaches a Responses client as its terminal
    `response.failed` event, never as a stream that just stops (which Codex would retry
    as if the network had dropped) or as another dialect's error chunk."""
    proxy = proxies("openai", "--request-timeout", "1.5", sim=sim)
    o = openai.OpenAI(base_url=proxy.url + "/v1", api_key="k", max_retries=0)
    sim.fault("stall-after=3;seconds=4")
    kinds = []
    with pytest.raises(openai.APIError):  # the body ends unfinished after the terminal event
        with o.responses.stream(model="kimi-k2.5", input="hello") as events:
            for event in events:
                kinds.append(event.type)
                if event.type == "response.failed":
                    assert "limit of 1.5 s" in event.response.error.message
    assert kinds[0] == "response.created" and kinds[-1] == "response.failed", kinds
    assert "response.completed" not in kinds
    assert health_ok(proxy.url)
