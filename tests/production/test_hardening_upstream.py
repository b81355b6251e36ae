"""A hostile or broken upstream, and an operator reading the logs: the upstream key never
reaches a client, a malformed or endless event ends the stream with an error event in the
client's format, an answer that is not a completion is a 502 naming the upstream, a
client cannot write lines of its own into the text log, and /health tells a stranger
only what a probe needs."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from ..conftest import UPSTREAM_KEY, Process
from .support import (
    ANTHROPIC_BODY,
    ENV_WITHOUT_PROXIES,
    OPENAI_BODY,
    ThreadedServer,
    eventually,
    fsim,
    metric,
    proxies,
    sim,
    start_raw_proxy,
)

_ = (fsim, sim, proxies)  # fixtures
ACCESS_KEY = "access-key-health-5e1d"
PATHS: dict[str, tuple[str, dict]] = {"anthropic": ("/v1/messages", ANTHROPIC_BODY),
                                      "openai": ("/v1/chat/completions", OPENAI_BODY)}

# What a scripted upstream does with one connection once it has read the request.
Script = Callable[[socket.socket], None]


class ScriptedUpstream(ThreadedServer):
    """A raw-socket upstream on 127.0.0.1: reads each request whole, then runs `script`
    on the connection (set or changed between requests), then closes it."""

    def __init__(self) -> None:
        super().__init__()
        self.script: Script = answer(200, b"{}")
        self.start()

    def base(self, fmt: str) -> str:
        return f"http://127.0.0.1:{self.port}" + ("/anthropic" if fmt == "anthropic" else "/v1")

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        with conn:
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    got = conn.recv(65536)
                    if not got:
                        return
                    data += got
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    body += conn.recv(65536)
                self.script(conn)
            except OSError:
                return  # the proxy hung up: what several tests want

    def close(self) -> None:
        self.listener.close()


def answer(status: int, body: bytes, ctype: bytes = b"application/json", extra: bytes = b"") -> Script:
    def script(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 %d X\r\ncontent-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n%s\r\n%s"
                     % (status, ctype, len(body), extra, body))
    return script


def event_stream(*events: bytes, hold: float = 0.0, status: int = 200, extra: bytes = b"") -> Script:
    """A stream that ends when the connection closes, `hold` seconds after the last event."""
    def script(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 %d X\r\ncontent-type: text/event-stream\r\nconnection: close\r\n%s\r\n"
                     % (status, extra))
        for ev in events:
            conn.sendall(ev)
        deadline = time.monotonic() + hold
        conn.settimeout(0.05)
        while time.monotonic() < deadline:
            try:
                if conn.recv(1) == b"":
                    return
            except TimeoutError:
                continue
    return script


def sse(data: dict | str, event: str | None = None) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {event}\n" if event else "").encode() + f"data: {text}\n\n".encode()


MESSAGE_START = sse({"type": "message_start", "message": {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "kimi-k2.5", "content": [],
    "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 0}}}, "message_start")
TEXT_START = sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                 "content_block_start")
THINKING_START = sse({"type": "content_block_start", "index": 0,
                      "content_block": {"type": "thinking", "thinking": "", "signature": ""}}, "content_block_start")
FIRST_CHUNK = sse({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "kimi-k2.5",
                   "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}]})


def anthropic_text_stream(text: str) -> list[bytes]:
    return [MESSAGE_START, TEXT_START,
            sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
                "content_block_delta"),
            sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                 "usage": {"output_tokens": 1}}, "message_delta"),
            sse({"type": "message_stop"}, "message_stop")]


def stream_from(url: str, dialect: str, timeout: float = 10.0) -> tuple[int, bytes, bool]:
    """(status, the bytes the client got, whether the body ended properly) for a streamed request."""
    path, body = PATHS[dialect]
    got = b""
    with httpx.stream("POST", url + path, json={**body, "stream": True}, timeout=timeout) as r:
        try:
            for chunk in r.iter_raw():
                got += chunk
        except httpx.RemoteProtocolError:
            return r.status_code, got, False
        return r.status_code, got, True


def assert_failed_stream(dialect: str, status: int, got: bytes, finished: bool) -> None:
    """An error event in the client's own format, and nothing that looks like a whole answer."""
    assert status == 200, got
    if dialect == "anthropic":
        assert b"event: error\n" in got and b'"type": "error"' in got.replace(b'"type":"error"', b'"type": "error"')
        assert b"message_stop" not in got
    else:
        assert b'data: {"error": {' in got.replace(b'{"error":{', b'{"error": {'), got
        assert b"[DONE]" not in got
    assert not finished, "a failed stream must not end with the last chunk"


@pytest.fixture
def upstream():
    up = ScriptedUpstream()
    yield up
    up.close()


@pytest.fixture
def proxy_to(upstream, tmp_path):
    """proxy_to(fmt, *flags, env=...) -> url of a proxy in front of the scripted upstream."""
    started: list[Process] = []

    def start(fmt: str, *flags: str, env: dict | None = None) -> str:
        url, proc = start_raw_proxy(tmp_path, "--upstream", upstream.base(fmt), "--upstream-format", fmt,
                                    "--api-key", UPSTREAM_KEY, "--retries", "0", *flags,
                                    env={**ENV_WITHOUT_PROXIES, **(env or {})}, name=f"proxy-{len(started)}")
        started.append(proc)
        return url

    start.processes = started  # type: ignore[attr-defined]
    yield start
    for proc in started:
        proc.stop()


# -- 4: the upstream key never reaches a client


def test_a_key_quoted_in_a_mid_stream_error_event_is_redacted_in_both_dialects(upstream, proxy_to):
    quoted = f"Incorrect API key provided: {UPSTREAM_KEY}"
    streams = {
        "anthropic": [MESSAGE_START,
                      sse({"type": "error", "error": {"type": "authentication_error", "message": quoted}}, "error")],
        "openai": [FIRST_CHUNK, sse({"error": {"message": quoted, "type": "invalid_request_error"}})],
    }
    for fmt, events in streams.items():
        url = proxy_to(fmt)
        upstream.script = event_stream(*events)
        for dialect in ("anthropic", "openai"):
            status, got, finished = stream_from(url, dialect)
            assert UPSTREAM_KEY.encode() not in got, (fmt, dialect, got)
            assert b"Incorrect API key provided: <redacted>" in got, (fmt, dialect, got)
            assert_failed_stream(dialect, status, got, finished)


def test_an_error_body_is_redacted_before_it_is_cut(upstream, proxy_to):
    # 1,990 characters and then the key: cutting the message at 2,000 first would leave
    # the key's first ten characters for redaction to miss.
    url = proxy_to("anthropic")
    upstream.script = answer(400, b"x" * 1990 + UPSTREAM_KEY.encode(), b"text/plain")
    for dialect in ("anthropic", "openai"):
        path, body = PATHS[dialect]
        r = httpx.post(url + path, json=body)
        assert r.status_code == 400
        assert UPSTREAM_KEY[:6] not in r.text, r.text[-60:]
    # An error body nested too deep to parse is relayed as text, still the upstream's 400.
    upstream.script = answer(400, b"[" * 100_000)
    for dialect in ("anthropic", "openai"):
        path, body = PATHS[dialect]
        r = httpx.post(url + path, json=body)
        assert r.status_code == 400 and r.json()["error"]["message"].startswith("[[["), r.text[:200]


def test_a_key_in_a_200_error_body_is_redacted(upstream, proxy_to):
    url = proxy_to("openai")
    upstream.script = answer(200, json.dumps({"error": {"message": f"bad key {UPSTREAM_KEY}",
                                                        "type": "invalid_request_error"}}).encode())
    for dialect in ("anthropic", "openai"):
        path, body = PATHS[dialect]
        r = httpx.post(url + path, json=body)
        assert UPSTREAM_KEY not in r.text and "bad key <redacted>" in r.text, r.text
        assert r.status_code == 502


# -- 9: a malformed upstream event is an error event, counted as one


ANTHROPIC_MALFORMED = {
    "invalid JSON in a block start": ([MESSAGE_START, b'event: content_block_start\ndata: {"type": "content_bl\n\n'],
                                      ("anthropic", "openai")),
    "a block that is a string": ([MESSAGE_START, sse({"type": "content_block_start", "index": 0, "content_block": "text"},
                                                     "content_block_start")], ("anthropic", "openai")),
    "a delta that is a list": ([MESSAGE_START, THINKING_START,
                                sse({"type": "content_block_delta", "index": 0, "delta": ["thinking_delta"]},
                                    "content_block_delta")], ("anthropic", "openai")),
    "nesting too deep to parse": ([MESSAGE_START, b'event: content_block_start\ndata: {"type": "content_block_start", '
                                   b'"index": 0, "content_block": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n\n"],
                                  ("anthropic", "openai")),
    "an index that is a list": ([MESSAGE_START, sse({"type": "content_block_start", "index": [0],
                                                     "content_block": {"type": "text", "text": ""}},
                                                    "content_block_start")], ("openai",)),
}
OPENAI_MALFORMED = {
    "invalid JSON in a tool-call chunk": ([FIRST_CHUNK, b'data: {"choices": [{"index": 0, "delta": {"tool_calls": [\n\n'],
                                          ("anthropic", "openai")),
    "choices that are a string": ([FIRST_CHUNK, sse({"choices": "reasoning_content"})], ("anthropic", "openai")),
    "a delta that is a list": ([FIRST_CHUNK, sse({"choices": [{"index": 0, "delta": ["reasoning_content"]}]})],
                               ("anthropic", "openai")),
    "a tool call whose function is a string": (
        [FIRST_CHUNK, sse({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "f:0",
                                                                               "function": "Bash"}]}}]})],
        ("anthropic",)),  # an OpenAI client gets the chunk as it came: the proxy reads no function there
}


@pytest.mark.parametrize("fmt, cases", [("anthropic", ANTHROPIC_MALFORMED), ("openai", OPENAI_MALFORMED)],
                         ids=["up-anthropic", "up-openai"])
def test_a_malformed_upstream_event_ends_the_stream_with_an_error_event(upstream, proxy_to, fmt, cases):
    url = proxy_to(fmt)
    failed = 0
    for name, (events, dialects) in cases.items():
        # The connection stays open after the bad event: only the proxy can end the stream.
        upstream.script = event_stream(*events, hold=5.0)
        for dialect in dialects:
            started = time.monotonic()
            status, got, finished = stream_from(url, dialect)
            assert time.monotonic() - started < 4, (name, dialect)
            assert b"malformed" in got, (name, dialect, got)
            assert_failed_stream(dialect, status, got, finished)
            failed += 1
    assert eventually(lambda: metric(url, 'rawproxy_streams_total{route="/v1/messages",result="error"}')
                      + metric(url, 'rawproxy_streams_total{route="/v1/chat/completions",result="error"}') == failed)
    assert metric(url, 'rawproxy_streams_total{route="/v1/messages",result="cancelled"}') == 0
    assert metric(url, 'rawproxy_streams_total{route="/v1/chat/completions",result="cancelled"}') == 0
    assert metric(url, 'rawproxy_upstream_errors_total{kind="malformed"}') == failed
    assert metric(url, "rawproxy_open_streams") == 0
    log = proxy_to.processes[0].output()
    assert log.count(" stream=error") == failed and " stream=cancelled" not in log
    assert log.count("sent a malformed stream event") >= failed


# -- 10: one event's size is capped


def test_an_event_past_the_size_cap_ends_the_stream_with_an_error_event(upstream, proxy_to):
    url = proxy_to("anthropic", "--max-event-bytes", "65536")
    # Events just under the cap pass, however many: the cap is per event.
    big = "y" * 60_000
    upstream.script = event_stream(*anthropic_text_stream(big)[:2], *[sse(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": big}},
        "content_block_delta")] * 8, *anthropic_text_stream("")[3:])
    status, got, finished = stream_from(url, "anthropic")
    assert status == 200 and finished and got.count(big.encode()) == 8 and b"message_stop" in got

    # One that never ends: an error event as soon as it passes the cap, not when the upstream quits.
    upstream.script = event_stream(MESSAGE_START, TEXT_START, b"event: content_block_delta\ndata: " + b"z" * 200_000,
                                   hold=8.0)
    for dialect in ("anthropic", "openai"):
        started = time.monotonic()
        status, got, finished = stream_from(url, dialect)
        assert time.monotonic() - started < 5
        assert b"65536" in got, got[-300:]
        assert_failed_stream(dialect, status, got, finished)
    assert metric(url, 'rawproxy_upstream_errors_total{kind="event_too_large"}') == 2


# -- 11: an answer that is not a completion is a 502 naming the upstream


def _assert_502_in_dialect(r: httpx.Response, dialect: str, port: int) -> None:
    assert r.status_code == 502, (r.status_code, r.text)
    doc = r.json()
    if dialect == "anthropic":
        assert doc["type"] == "error" and doc["error"]["type"] == "api_error"
    else:
        assert doc["error"]["type"] == "server_error"
    message = doc["error"]["message"]
    assert f"127.0.0.1:{port}" in message, message


@pytest.mark.parametrize("fmt", ["anthropic", "openai"])
def test_an_answer_that_is_not_a_completion_is_a_502_naming_the_upstream(upstream, proxy_to, fmt):
    url = proxy_to(fmt)
    completions: dict[str, dict] = {
        "anthropic": {"id": "msg_1", "type": "message", "role": "assistant", "model": "k", "content": [],
                      "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}},
        "openai": {"id": "c1", "object": "chat.completion", "model": "k", "choices": []}}
    completion = completions[fmt]
    field = "content" if fmt == "anthropic" else "choices"
    odd = {
        "a redirect": answer(302, json.dumps(completion).encode(), extra=b"location: http://127.0.0.1:9/elsewhere\r\n"),
        "a list": answer(200, b"[1, 2]"),
        "nesting too deep to parse": answer(200, b"[" * 100_000 + b"]" * 100_000),
        f"{field} a string": answer(200, json.dumps({**completion, field: "hello"}).encode()),
    }
    for script in odd.values():
        upstream.script = script
        for dialect in ("anthropic", "openai"):
            path, body = PATHS[dialect]
            r = httpx.post(url + path, json=body)
            _assert_502_in_dialect(r, dialect, upstream.port)
    upstream.script = answer(200, b"[" * 100_000 + b"]" * 100_000)  # the model list too
    assert httpx.get(url + "/v1/models").status_code == 502
    # A streaming request redirected: no stream is relayed from it.
    upstream.script = event_stream(*anthropic_text_stream("hi"), status=302,
                                   extra=b"location: http://127.0.0.1:9/elsewhere\r\n")
    for dialect in ("anthropic", "openai"):
        path, body = PATHS[dialect]
        r = httpx.post(url + path, json={**body, "stream": True})
        _assert_502_in_dialect(r, dialect, upstream.port)


def test_count_tokens_neither_follows_a_redirect_nor_relays_the_key(upstream, proxy_to):
    url = proxy_to("anthropic")
    upstream.script = answer(302, b'{"input_tokens": 1}', extra=b"location: http://127.0.0.1:9/elsewhere\r\n")
    r = httpx.post(url + "/v1/messages/count_tokens", json=ANTHROPIC_BODY)
    _assert_502_in_dialect(r, "anthropic", upstream.port)
    upstream.script = answer(200, json.dumps({"input_tokens": 7, "note": f"key {UPSTREAM_KEY}"}).encode())
    r = httpx.post(url + "/v1/messages/count_tokens", json=ANTHROPIC_BODY)
    assert r.status_code == 200 and r.json() == {"input_tokens": 7, "note": "key <redacted>"}


# -- 12: a client cannot forge lines of the text log


def test_a_model_name_cannot_forge_a_text_log_line(upstream, proxy_to):
    url = proxy_to("openai")
    upstream.script = answer(200, json.dumps({"id": "c1", "object": "chat.completion", "model": "k", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}).encode())
    forged = "2030-01-01 00:00:00,000 INFO rawproxy.access: POST /v1/admin 200 1.0ms upstream=200 model=x"
    r = httpx.post(url + "/v1/chat/completions", json={**OPENAI_BODY, "model": "kimi\n" + forged + "\r\x1b[2J"})
    assert r.status_code == 200
    proc = proxy_to.processes[0]
    access = eventually(lambda: [line for line in proc.output().splitlines() if "rawproxy.access" in line])
    assert not any(line.startswith("2030-01-01") for line in access), access
    assert any("model=kimi\\n2030-01-01" in line and "\\r\\x1b[2J" in line for line in access), access


# -- 17: /health without a key shows only what a probe needs


def test_health_tells_a_stranger_only_the_status(upstream, proxy_to):
    url = proxy_to("anthropic", env={"PROXY_API_KEYS": ACCESS_KEY})
    for headers in ({}, {"x-api-key": "wrong"}, {"authorization": "Bearer " + ACCESS_KEY + "x"}):
        r = httpx.get(url + "/health", headers=headers)
        assert r.status_code == 200
        assert set(r.json()) <= {"status", "version"} and r.json()["status"] == "ok", r.text
    for headers in ({"x-api-key": ACCESS_KEY}, {"authorization": "Bearer " + ACCESS_KEY}):
        doc = httpx.get(url + "/health", headers=headers).json()
        assert doc["status"] == "ok" and doc["upstream"] == upstream.base("anthropic") and doc["worker"]

    open_url = proxy_to("anthropic")  # no access keys: a laptop, everything as before
    doc = httpx.get(open_url + "/health").json()
    assert doc["upstream"] == upstream.base("anthropic") and doc["upstream_format"] == "anthropic"
