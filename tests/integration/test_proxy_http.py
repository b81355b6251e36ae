"""The proxy's HTTP surface: routes, errors in the client's dialect, Claude Code's real requests."""

from __future__ import annotations

import json
import os
import socket

import httpx
import pytest

from ..conftest import CLAUDE_CODE_FIXTURES as FIXTURES
from ..conftest import UPSTREAM_KEY, free_port


def claude_code_request(name: str) -> tuple[dict, dict]:
    with open(os.path.join(FIXTURES, name)) as f:
        body = json.load(f)
    with open(os.path.join(FIXTURES, "2.1.331-headers.json")) as f:
        headers = json.load(f)
    skip = {"host", "content-length", "connection", "accept-encoding"}
    headers = {k: v for k, v in headers.items() if k.lower() not in skip}
    return body, headers


@pytest.mark.parametrize("name", ["2.1.331-first-turn.json", "2.1.331-after-tool-use.json"])
def test_claude_code_requests_pass_the_repair_and_stream_back(proxy, sim, name):
    body, headers = claude_code_request(name)
    # Straight to the simulator (with a Kimi model name) it is refused.
    direct = httpx.post(sim.base("anthropic") + "/v1/messages", json={**body, "model": "kimi-k2.5"},
                        headers=headers, timeout=10)
    assert direct.status_code == 400, direct.text

    with httpx.stream("POST", proxy.url + "/v1/messages?beta=true", json=body, headers=headers, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = [line[len("event: "):] for line in raw.splitlines() if line.startswith("event: ")]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "[DONE]" not in raw
    upstream = sim.requests()[-1]
    assert upstream["status"] == 200
    # The forwarded request kept Claude Code's identity headers.
    assert upstream["headers"]["user-agent"].startswith("claude-cli/")
    if proxy.upstream_format == "anthropic":
        assert upstream["headers"]["anthropic-beta"] == headers["anthropic-beta"]
        assert upstream["headers"]["x-claude-code-session-id"] == headers["X-Claude-Code-Session-Id"]
        sent = upstream["body"]
        assert all(m["role"] in ("user", "assistant") for m in sent["messages"])
        assert sent["thinking"]["type"] == "enabled"
        assert any("Primary working directory" in b.get("text", "") for m in sent["messages"]
                   for b in (m["content"] if isinstance(m["content"], list) else []))


def test_query_string_is_ignored_and_unknown_paths_get_json_404(proxy):
    r = httpx.get(proxy.url + "/health?x=1")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = httpx.get(proxy.url + "/v2/nothing")
    assert r.status_code == 404 and "no route" in r.json()["error"]["message"]
    r = httpx.get(proxy.url + "/v1/messages")
    assert r.status_code == 405 and r.json()["type"] == "error"  # Anthropic shape on its path
    r = httpx.get(proxy.url + "/v1/chat/completions")
    assert r.status_code == 405 and "message" in r.json()["error"]  # OpenAI shape


@pytest.mark.parametrize("payload,content_type,status,needle", [
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b"[1, 2]", "application/json", 400, "JSON object"),
    (b'{"model": "kimi-k2.5"}', "application/json", 400, "messages"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}', "text/plain", 415, "content-type"),
])
def test_bad_input_is_a_clear_error_in_each_dialect(proxy, payload, content_type, status, needle):
    r = httpx.post(proxy.url + "/v1/messages", content=payload, headers={"content-type": content_type})
    assert r.status_code == status and r.json()["type"] == "error" and needle in r.json()["error"]["message"]
    r = httpx.post(proxy.url + "/v1/chat/completions", content=payload, headers={"content-type": content_type})
    assert r.status_code == status and needle in r.json()["error"]["message"]


def test_anthropic_body_without_max_tokens_is_refused(proxy):
    r = httpx.post(proxy.url + "/v1/messages", json={"model": "kimi-k2.5", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]


def test_upstream_error_keeps_status_and_message_reshaped(proxy):
    # An unknown model passes the repair untouched; the simulator answers 404.
    r = httpx.post(proxy.url + "/v1/chat/completions",
                   json={"model": "gpt-nothing", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404 and "gpt-nothing" in r.json()["error"]["message"]
    r = httpx.post(proxy.url + "/v1/messages",
                   json={"model": "gpt-nothing", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404 and r.json()["type"] == "error" and "gpt-nothing" in r.json()["error"]["message"]


def test_count_tokens_forwards_or_says_404_never_zero(proxy):
    body = {"model": "claude-opus-5-5", "messages": [{"role": "user", "content": "count me"}]}
    r = httpx.post(proxy.url + "/v1/messages/count_tokens?beta=true", json=body, headers={"x-api-key": "k"})
    if proxy.upstream_format == "anthropic":
        assert r.status_code == 200 and r.json()["input_tokens"] > 0
    else:
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_models_listing_in_each_dialect(proxy):
    r = httpx.get(proxy.url + "/v1/models", headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
    assert r.status_code == 200 and r.json()["data"][0]["type"] == "model"
    r = httpx.get(proxy.url + "/v1/models", headers={"authorization": "Bearer k"})
    assert r.status_code == 200 and r.json()["object"] == "list" and r.json()["data"][0]["object"] == "model"


def test_unreachable_upstream_is_a_502_naming_it(simulator, tmp_path):
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    port = free_port()
    import sys

    from ..conftest import Process, wait_http

    proc = Process([sys.executable, "-m", "rawproxy", "--port", str(port), "--upstream", f"http://127.0.0.1:{dead}/v1",
                    "--api-key", UPSTREAM_KEY], str(tmp_path / "p.log"))
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc.proc)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                       json={"model": "kimi-k2.5", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 502 and f"127.0.0.1:{dead}" in r.json()["error"]["message"]
        r = httpx.post(f"http://127.0.0.1:{port}/v1/messages",
                       json={"model": "kimi-k2.5", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 502 and r.json()["type"] == "error"
        assert UPSTREAM_KEY not in proc.output()
    finally:
        proc.stop()


def test_keep_alive_serves_many_requests_on_one_connection(proxy):
    with httpx.Client(base_url=proxy.url) as client:
        for _ in range(20):
            assert client.get("/health").status_code == 200
        # httpx reuses one connection for all of them.
        assert len(client._transport._pool.connections) == 1


def test_upstream_key_is_never_echoed_or_logged(proxy, sim):
    r = httpx.post(proxy.url + "/v1/chat/completions",
                   json={"model": "kimi-k2.5", "messages": [{"role": "user", "content": "hi"}]},
                   headers={"authorization": "Bearer client-key"})
    assert r.status_code == 200
    assert UPSTREAM_KEY not in r.text and UPSTREAM_KEY not in proxy.process.output()
