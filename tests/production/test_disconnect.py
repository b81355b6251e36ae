"""A client that leaves cancels its upstream request: the upstream sees its connection
closed. The upstream here is a raw socket that answers the head (and, for a stream, one
event), then stays silent, so only the client's departure can end the exchange."""

from __future__ import annotations

import json
import socket
import threading
import time

from .support import ANTHROPIC_BODY, connect, eventually, health_ok, metric, raw_request, start_raw_proxy

_EVENT = (b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message",'
          b'"role":"assistant","model":"m","content":[],"stop_reason":null,"usage":{"input_tokens":1,"output_tokens":1}}}\n\n')


class SilentUpstream:
    """Accepts one connection, reads the request, optionally sends the head and one SSE
    event, then waits for EOF and records when it came."""

    def __init__(self, answer_head: bool) -> None:
        self.answer_head = answer_head
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.request_seen = threading.Event()
        self.closed_at: float | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += conn.recv(65536)
            if self.answer_head:
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                             + b"%x\r\n%s\r\n" % (len(_EVENT), _EVENT))
            self.request_seen.set()
            conn.settimeout(10)
            try:
                while conn.recv(65536):
                    pass
            except (TimeoutError, ConnectionResetError):
                pass
            self.closed_at = time.monotonic()

    def close(self) -> None:
        self.listener.close()


def _proxy(tmp_path, upstream: SilentUpstream):
    return start_raw_proxy(tmp_path, "--upstream", f"http://127.0.0.1:{upstream.port}/anthropic",
                           "--upstream-format", "anthropic", "--api-key", "sk-up")


def test_client_leaving_mid_stream_closes_the_upstream_connection_within_100ms(tmp_path):
    upstream = SilentUpstream(answer_head=True)
    url, proc = _proxy(tmp_path, upstream)
    try:
        sock = connect(url)
        body = json.dumps({**ANTHROPIC_BODY, "stream": True}).encode()
        sock.sendall(raw_request(url, "POST", "/v1/messages", body, {"content-type": "application/json"}))
        got = b""
        while b"message_start" not in got:  # the stream is open and relayed
            got += sock.recv(65536)
        assert upstream.request_seen.wait(5)
        assert metric(url, "rawproxy_open_streams") == 1
        left = time.monotonic()
        sock.close()
        upstream.thread.join(5)
        assert upstream.closed_at is not None
        assert upstream.closed_at - left < 0.1, f"upstream closed {upstream.closed_at - left:.3f}s after the client"
        assert eventually(lambda: metric(url, "rawproxy_open_streams") == 0)
        assert eventually(lambda: metric(url, 'rawproxy_streams_total{route="/v1/messages",result="cancelled"}') == 1)
        assert health_ok(url)
    finally:
        proc.stop()
        upstream.close()


def test_client_leaving_before_the_answer_cancels_the_upstream_request(tmp_path):
    # A long non-streamed answer (thinking for minutes): nothing has been sent to the
    # client yet, and the server looks at waiting clients every half second.
    upstream = SilentUpstream(answer_head=False)
    url, proc = _proxy(tmp_path, upstream)
    try:
        sock = connect(url)
        sock.sendall(raw_request(url, "POST", "/v1/messages", json.dumps(ANTHROPIC_BODY).encode(),
                                 {"content-type": "application/json"}))
        assert upstream.request_seen.wait(5)
        time.sleep(0.2)
        left = time.monotonic()
        sock.close()
        upstream.thread.join(5)
        assert upstream.closed_at is not None and upstream.closed_at - left < 1.5
        assert health_ok(url)
    finally:
        proc.stop()
        upstream.close()
