"""Graceful drain in one process: on SIGTERM the proxy stops accepting, lets the streams
in flight finish, and exits 0; past --graceful-timeout it cuts them, telling each client."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

import pytest

from .support import (
    ANTHROPIC_BODY,
    OPENAI_BODY,
    connect,
    dechunk,
    fsim,
    proxies,
    raw_request,
    read_until_closed,
    sim,
    split_response,
)

_ = (fsim, sim, proxies)  # fixtures


class _Streams:
    """n raw streaming requests, each on its own connection, read to the end in threads."""

    def __init__(self, url: str, n: int, path: str = "/v1/messages", body: dict = ANTHROPIC_BODY) -> None:
        self.results: list[bytes | None] = [None] * n
        self.started = [threading.Event() for _ in range(n)]
        payload = json.dumps({**body, "stream": True}).encode()
        self.request = raw_request(url, "POST", path, payload, {"content-type": "application/json"})
        self.threads = [threading.Thread(target=self._one, args=(url, i), daemon=True) for i in range(n)]
        for t in self.threads:
            t.start()

    def _one(self, url: str, i: int) -> None:
        sock = connect(url, timeout=20)
        sock.sendall(self.request)
        first = sock.recv(65536)
        self.started[i].set()  # the head (and the first events) arrived: the stream is open
        self.results[i] = first + read_until_closed(sock, limit=20)
        sock.close()

    def wait_started(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        for e in self.started:
            assert e.wait(max(0.0, deadline - time.monotonic())), "a stream did not start"

    def join(self) -> list[bytes]:
        for t in self.threads:
            t.join(30)
        return [r or b"" for r in self.results]


def _events_of(raw: bytes) -> tuple[bool, bytes]:
    status, _, rest = split_response(raw)
    assert status == 200
    payload, complete = dechunk(rest)
    return complete, payload


def test_sigterm_during_50_open_streams_lets_them_all_finish_then_exits_0(sim, proxies):
    proxy = proxies("anthropic", sim=sim)
    sim.fault("stall-after=3;seconds=2")  # each stream pauses mid-way: all 50 are open at once
    streams = _Streams(proxy.url, 50)
    streams.wait_started()

    proc = proxy.process.proc
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(OSError):  # no longer accepting
        socket.create_connection(("127.0.0.1", int(proxy.url.rsplit(":", 1)[1])), timeout=2).close()

    for raw in streams.join():
        complete, payload = _events_of(raw)
        assert complete and payload.rstrip().endswith(b'data: {"type": "message_stop"}')
    assert proc.wait(10) == 0
    assert time.monotonic() - signalled < 6
    log = proxy.process.output()
    assert "SIGTERM: draining" in log and log.count("stream=complete") == 50


def test_streams_still_open_at_the_graceful_timeout_are_cut_with_an_error_event(sim, proxies):
    proxy = proxies("openai", "--graceful-timeout", "1", sim=sim)
    sim.fault("stall-after=3;seconds=10")
    streams = [_Streams(proxy.url, 2), _Streams(proxy.url, 2, "/v1/chat/completions", OPENAI_BODY)]
    for s in streams:
        s.wait_started()
    # An idle keep-alive connection is closed at once, not waited for.
    idle = connect(proxy.url)
    idle.sendall(raw_request(proxy.url, "GET", "/health"))
    assert idle.recv(65536).startswith(b"HTTP/1.1 200")

    proc = proxy.process.proc
    signalled = time.monotonic()
    proc.send_signal(signal.SIGINT)
    read_until_closed(idle, limit=3)  # the rest of the /health answer, then the close
    assert time.monotonic() - signalled < 0.5
    idle.close()
    assert proc.wait(10) == 0
    assert 0.9 < time.monotonic() - signalled < 4

    anthropic_raw, openai_raw = streams[0].join(), streams[1].join()
    for raw in anthropic_raw:
        complete, payload = _events_of(raw)
        assert not complete and b"event: error\n" in payload and b"shutting down" in payload
        assert b"message_stop" not in payload
    for raw in openai_raw:
        complete, payload = _events_of(raw)
        assert not complete and b'data: {"error"' in payload and b"shutting down" in payload
        assert b"[DONE]" not in payload
