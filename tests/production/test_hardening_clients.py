"""Clients that try to hold the proxy's memory, its connection slots or its event loop, or
to slip a second request inside a first one: a keyless client is answered from its head,
bodies in flight are bounded per process, slow and silent connections give way, a large
body never stalls anyone else, HEAD is answered properly, and Content-Length beside
Transfer-Encoding is refused."""

from __future__ import annotations

import gc
import json
import selectors
import socket
import threading
import time

import httpx
import pytest

from .support import (
    ANTHROPIC_BODY,
    OPENAI_BODY,
    connect,
    fsim,
    proxies,
    raw_request,
    read_until_closed,
    rss_kib,
    sim,
    split_response,
)

_ = (fsim, sim, proxies)  # fixtures

KEY = "access-key-clients-5e1d"
MIB = 1 << 20
DIALECT_PATHS = [("/v1/messages", "anthropic"), ("/v1/chat/completions", "openai")]


def _head(path: str, length: int, headers: dict | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: 127.0.0.1", "content-type: application/json",
             f"content-length: {length}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _error(body: bytes, dialect: str) -> tuple[str, str]:
    """(type, message) of an error body, checking it has the dialect's shape."""
    doc = json.loads(body)
    if dialect == "anthropic":
        assert doc["type"] == "error"
    else:
        assert "type" not in doc and "code" in doc["error"]
    return doc["error"]["type"], doc["error"]["message"]


def _status(pid: int, field: str) -> int:
    """A /proc/<pid>/status size in KiB: VmRSS now, VmHWM the peak since start."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field}")


def _settled_rss(pid: int) -> int:
    gc.collect()
    time.sleep(1.0)
    return rss_kib(pid)


def _empty_objects_body(size: int) -> bytes:
    """A Messages body of about `size` bytes whose messages are `{}`: about 10 million
    objects for 31 MiB, the cheapest bytes to send and the dearest to parse."""
    head = b'{"model": "kimi-k2.5", "max_tokens": 10, "messages": ['
    count = (size - len(head) - 2) // 3
    return head + b",".join([b"{}"] * count) + b"]}"


class _Responses:
    """Reads answers off one keep-alive connection; a HEAD answer has no body."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def next(self, head_only: bool = False) -> tuple[int, dict, bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status, headers, _ = split_response(head + b"\r\n\r\n")
        length = 0 if head_only else int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self._more()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed by the proxy; unread: {self.buf[:200]!r}")
        self.buf += data


class _Watch:
    """Samples the proxy's RSS and asks /health on its own connection every `every`
    seconds, in a thread, until stopped."""

    def __init__(self, url: str, pid: int, every: float = 0.1, health_timeout: float = 2.0) -> None:
        self.url, self.pid, self.every, self.health_timeout = url, pid, every, health_timeout
        self.peak_kib = rss_kib(pid)
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sock = None
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, rss_kib(self.pid))
            try:
                if sock is None:
                    sock = connect(self.url, timeout=self.health_timeout)
                    reader = _Responses(sock)
                started = time.monotonic()
                sock.sendall(raw_request(self.url, "GET", "/health"))
                status, _, _ = reader.next()
                self.latencies.append(time.monotonic() - started)
                if status != 200:
                    self.failures.append(f"/health answered {status}")
            except OSError as exc:
                self.failures.append(f"/health: {type(exc).__name__}: {exc}")
                if sock is not None:
                    sock.close()
                sock = None
            self._stop.wait(self.every)
        if sock is not None:
            sock.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


# ---------------------------------------------------------------- 1. keys from the head, bodies bounded


@pytest.mark.parametrize("path,dialect", DIALECT_PATHS)
def test_a_keyless_upload_is_answered_401_from_its_head_without_100_continue(sim, proxies, path, dialect):
    proxy = proxies("anthropic", sim=sim, env={"PROXY_API_KEYS": KEY})
    sock = connect(proxy.url, timeout=5)
    sock.sendall(_head(path, 20 * MIB, {"expect": "100-continue"}))  # and no body at all
    started = time.monotonic()
    answer = read_until_closed(sock, limit=5)
    sock.close()
    status, headers, body = split_response(answer)
    assert status == 401, answer[:200]
    assert headers["connection"] == "close" and time.monotonic() - started < 4.0
    kind, message = _error(body, dialect)
    assert kind == "authentication_error" and "access key" in message


def test_200_keyless_uploads_of_20_mib_keep_rss_near_idle_and_health_answering(sim, proxies):
    proxy = proxies("anthropic", sim=sim, env={"PROXY_API_KEYS": KEY})
    pid = proxy.process.proc.pid
    for _ in range(3):
        httpx.get(proxy.url + "/health")
    idle = _settled_rss(pid)
    size = 20 * MIB
    watch = _Watch(proxy.url, pid, every=0.05)
    socks: list[socket.socket] = []
    answers: dict[socket.socket, bytes] = {}
    try:
        for _ in range(200):
            s = connect(proxy.url)
            s.sendall(_head("/v1/messages", size))
            s.setblocking(False)
            socks.append(s)
        answers = _pump(socks, size - 1, seconds=20.0, give_up=lambda: watch.peak_kib - idle > 100 * 1024)
    finally:
        for s in socks:
            s.close()
        watch.stop()
    grown_mb = (watch.peak_kib - idle) / 1024
    assert grown_mb <= 100, f"RSS grew by {grown_mb:.0f} MB under keyless uploads"
    assert watch.failures == [] and len(watch.latencies) >= 5
    refused = sum(1 for a in answers.values() if a.startswith(b"HTTP/1.1 401"))
    assert refused == 200, f"{refused} of 200 keyless uploads got their 401"
    settled_mb = (_settled_rss(pid) - idle) / 1024
    assert settled_mb <= 50, f"RSS stayed {settled_mb:.0f} MB above idle after the uploads"


def _pump(socks: list[socket.socket], length: int, seconds: float, give_up) -> dict[socket.socket, bytes]:
    """Send each socket `length` body bytes as fast as the proxy takes them (the last byte
    of a body is held back), keeping whatever the proxy answers and sending on after it
    (as an uploader does until a write fails); until every socket is refused, `seconds`
    pass, or `give_up()`."""
    chunk = memoryview(b"x" * (256 * 1024))
    sent = dict.fromkeys(socks, 0)
    answers = dict.fromkeys(socks, b"")
    selector = selectors.DefaultSelector()
    for s in socks:
        selector.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, data=s)
    deadline = time.monotonic() + seconds
    try:
        while selector.get_map() and time.monotonic() < deadline and not give_up():
            for key, events in selector.select(0.1):
                s = key.data
                try:
                    if events & selectors.EVENT_READ:
                        data = s.recv(65536)
                        answers[s] += data
                        if not data:  # the proxy is done talking; the upload goes on
                            selector.modify(s, selectors.EVENT_WRITE, data=s)
                    if events & selectors.EVENT_WRITE:
                        left = length - sent[s]
                        if left > 0:
                            sent[s] += s.send(chunk[:min(left, len(chunk))])
                        elif key.events == selectors.EVENT_WRITE:
                            selector.unregister(s)  # all sent and the answer read: done
                        else:
                            selector.modify(s, selectors.EVENT_READ, data=s)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:  # refused and closed: reset, broken pipe
                    selector.unregister(s)
    finally:
        selector.close()
    return answers


@pytest.mark.parametrize("path,dialect", DIALECT_PATHS)
def test_bodies_in_flight_are_bounded_per_process_and_past_the_bound_a_client_gets_503(sim, proxies, path, dialect):
    proxy = proxies("anthropic", sim=sim, env={"PROXY_MAX_BODY_BYTES": "2000000",
                                               "PROXY_MAX_INFLIGHT_BODY_BYTES": "3000000"})
    dense = b'{"pad": [' + b",".join([b"0"] * 50_000) + b"]}"
    holder = connect(proxy.url, timeout=10)
    try:
        holder.sendall(_head(path, 2_000_000, {"connection": "close"}) + b"x" * 1_000_000)  # half its body, held
        time.sleep(0.3)
        late = connect(proxy.url, timeout=10)
        late.sendall(_head(path, 2_000_000, {"expect": "100-continue"}))
        answer = read_until_closed(late, limit=5)
        late.close()
        status, headers, body = split_response(answer)
        assert status == 503, answer[:200]
        assert headers["retry-after"] == "1" and headers["connection"] == "close"
        kind, message = _error(body, dialect)
        assert "request bodies" in message and "retry" in message
        assert kind == ("overloaded_error" if dialect == "anthropic" else "server_error")

        small = httpx.post(proxy.url + "/v1/messages", json=ANTHROPIC_BODY, timeout=10)
        assert small.status_code == 200  # a small body still fits beside the held one
        # 100 kB whose parse would build 1.2 MB more: read, then refused before the parse.
        r = httpx.post(proxy.url + path, content=dense, headers={"content-type": "application/json"}, timeout=10)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "request bodies" in _error(r.content, dialect)[1]

        holder.sendall(b"x" * 1_000_000)  # the held body ends: not JSON, a 400, its room freed
        assert split_response(read_until_closed(holder, limit=5))[0] == 400
    finally:
        holder.close()
    r = httpx.post(proxy.url + path, content=b"x" * 2_000_000, headers={"content-type": "application/json"},
                   timeout=10)
    assert r.status_code == 400 and "not valid JSON" in r.text
    r = httpx.post(proxy.url + path, content=dense, headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 400 and "model" in r.text  # parsed now: there is room


def test_bursts_of_accepted_uploads_leave_rss_near_idle(sim, proxies):
    proxy = proxies("anthropic", sim=sim)
    pid = proxy.process.proc.pid
    httpx.post(proxy.url + "/v1/messages", json=ANTHROPIC_BODY, timeout=10)
    idle = _settled_rss(pid)

    def upload(body: bytes) -> None:
        with connect(proxy.url, timeout=30) as s:
            s.sendall(_head("/v1/messages", len(body), {"connection": "close"}) + body)
            assert split_response(read_until_closed(s, limit=30))[0] == 400

    # Large buffers freed, then smaller ones: the pattern that leaves a heap fragmented.
    for count, mib in ((16, 12), (32, 6), (64, 3), (16, 12), (32, 6), (64, 3)):
        body = b'{"pad": "' + b"x" * (mib * MIB) + b'"}'  # parses, then fails validation: a 400
        threads = [threading.Thread(target=upload, args=(body,)) for _ in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    settled_mb = (_settled_rss(pid) - idle) / 1024
    assert settled_mb <= 25, f"RSS stayed {settled_mb:.0f} MB above idle after bursts of uploads"


# ---------------------------------------------------------------- 2. slow and silent connections


def test_a_body_sent_a_byte_at_a_time_is_cut_at_the_body_timeout(sim, proxies):
    proxy = proxies("anthropic", sim=sim, env={"PROXY_BODY_TIMEOUT": "1.5"})
    sock = connect(proxy.url, timeout=5)
    sock.sendall(_head("/v1/messages", 1000) + b"{")
    sock.settimeout(0.5)
    started = time.monotonic()
    got = b""
    while time.monotonic() - started < 6:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            sock.send(b" ")  # one byte every half second: never idle, never done
            continue
        if not data:
            break
        got += data
    elapsed = time.monotonic() - started
    sock.close()
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert 1.2 < elapsed < 4.0
    assert "timed out reading the request body" in _error(split_response(got)[2], "anthropic")[1]


def test_at_the_connection_cap_silent_connections_give_way_to_a_newcomer(sim, proxies):
    proxy = proxies("anthropic", "--max-connections", "10", sim=sim)
    silent = [connect(proxy.url, timeout=5) for _ in range(10)]  # connected, never a byte
    try:
        time.sleep(1.5)
        r = httpx.post(proxy.url + "/v1/messages", json=ANTHROPIC_BODY, timeout=10)
        assert r.status_code == 200, r.text
        for s in silent:
            s.settimeout(0.2)
        closed = sum(1 for s in silent if read_until_closed(s, limit=0.5) == b"")
        assert closed >= 1
    finally:
        for s in silent:
            s.close()


def test_at_the_connection_cap_keyless_uploads_give_way_to_a_client_with_a_key(sim, proxies):
    proxy = proxies("anthropic", "--max-connections", "10", sim=sim, env={"PROXY_API_KEYS": KEY})
    keyless = []
    try:
        for _ in range(10):
            s = connect(proxy.url, timeout=5)
            s.sendall(_head("/v1/messages", MIB) + b"x" * 1000)  # the rest never comes
            keyless.append(s)
        time.sleep(0.3)
        r = httpx.post(proxy.url + "/v1/messages", json=ANTHROPIC_BODY, headers={"x-api-key": KEY}, timeout=10)
        assert r.status_code == 200, r.text
    finally:
        for s in keyless:
            s.close()


# ---------------------------------------------------------------- 5. HEAD


def test_head_gets_the_headers_of_get_without_a_body_and_post_routes_get_405(sim, proxies):
    proxy = proxies("anthropic", sim=sim)
    sock = connect(proxy.url, timeout=5)
    answers = _Responses(sock)
    try:
        for path in ("/health", "/v1/models", "/metrics"):
            sock.sendall(raw_request(proxy.url, "HEAD", path))
            status, headers, _ = answers.next(head_only=True)
            assert status == 200 and int(headers["content-length"]) > 0, (path, headers)
        for path in ("/v1/messages", "/v1/chat/completions", "/v1/messages/count_tokens"):
            sock.sendall(raw_request(proxy.url, "HEAD", path))
            status, headers, _ = answers.next(head_only=True)
            assert status == 405 and headers["allow"] == "POST", (path, headers)
        # No body followed any of them: the next answer on the connection is whole.
        sock.sendall(raw_request(proxy.url, "GET", "/health"))
        status, headers, body = answers.next()
        assert status == 200 and json.loads(body)["status"] == "ok" and answers.buf == b""
    finally:
        sock.close()
    assert "Traceback" not in proxy.process.output()


# ---------------------------------------------------------------- 6. a large body and the event loop


def test_health_answers_within_50_ms_while_a_31_mib_body_is_parsed(sim, proxies):
    # A bound high enough that the ten million objects are parsed rather than refused.
    proxy = proxies("anthropic", sim=sim, env={"PROXY_API_KEYS": KEY,
                                               "PROXY_MAX_INFLIGHT_BODY_BYTES": str(4 << 30)})
    body = _empty_objects_body(31 * MIB)
    answer: list[bytes] = []

    def upload() -> None:
        with connect(proxy.url, timeout=60) as s:
            s.sendall(_head("/v1/messages", len(body), {"x-api-key": KEY, "connection": "close"}) + body)
            answer.append(read_until_closed(s, limit=60))

    probe = connect(proxy.url, timeout=5)
    answers = _Responses(probe)
    latencies = []
    # The probe is timed from this process: a collection of the test process's own heap
    # (large after a whole suite) would be counted against the proxy.
    gc.collect()
    gc.disable()
    try:
        # What /health takes on this machine right now with nothing else to do: the check
        # below judges what the body adds (about 1 ms on a quiet machine).
        idle = []
        for _ in range(30):
            started = time.monotonic()
            probe.sendall(raw_request(proxy.url, "GET", "/health"))
            assert answers.next()[0] == 200
            idle.append(time.monotonic() - started)
            time.sleep(0.01)
        sender = threading.Thread(target=upload)
        sender.start()
        while sender.is_alive():
            started = time.monotonic()
            probe.sendall(raw_request(proxy.url, "GET", "/health"))
            assert answers.next()[0] == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.01)
        sender.join()
    finally:
        gc.enable()
        probe.close()
    status, _, err = split_response(answer[0])
    assert status == 400 and "messages[0]" in _error(err, "anthropic")[1]  # parsed, then judged
    assert len(latencies) >= 20
    worst, baseline = max(latencies), max(idle)
    print(f"/health: worst {worst * 1000:.1f} ms while a 31 MiB body was handled, {baseline * 1000:.1f} ms idle")
    assert worst < 0.050 + baseline, (f"/health waited {worst * 1000:.0f} ms while a 31 MiB body was handled "
                                      f"({baseline * 1000:.0f} ms idle)")


def test_a_body_whose_parse_would_outweigh_the_memory_bound_is_refused_unparsed(sim, proxies):
    proxy = proxies("anthropic", sim=sim, env={"PROXY_API_KEYS": KEY})
    pid = proxy.process.proc.pid
    idle = _settled_rss(pid)
    r = httpx.post(proxy.url + "/v1/messages", content=_empty_objects_body(31 * MIB),
                   headers={"x-api-key": KEY, "content-type": "application/json"}, timeout=60)
    assert r.status_code == 413, r.text[:300]
    kind, message = _error(r.content, "anthropic")
    assert kind == "request_too_large" and "memory" in message
    peak_mb = (_status(pid, "VmHWM") - idle) / 1024
    assert peak_mb < 200, f"the refused body still took {peak_mb:.0f} MB"


# ---------------------------------------------------------------- 8. Content-Length beside Transfer-Encoding


def test_content_length_beside_transfer_encoding_is_a_400_and_the_connection_closes(sim, proxies):
    proxy = proxies("anthropic", sim=sim)
    body = json.dumps(OPENAI_BODY).encode()
    smuggled = b"GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
    payload = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) + smuggled
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
               b"content-length: %d\r\ntransfer-encoding: chunked\r\n\r\n" % len(payload)) + payload
    sock = connect(proxy.url, timeout=5)
    sock.sendall(request)
    answer = read_until_closed(sock, limit=5)
    sock.close()
    assert answer.count(b"HTTP/1.1 ") == 1, answer[:400]
    status, headers, err = split_response(answer)
    assert status == 400 and headers["connection"] == "close"
    assert "Content-Length" in _error(err, "openai")[1]


# ---------------------------------------------------------------- the settings


def test_the_body_limits_are_flags_and_environment_settings_with_defaults():
    from rawproxy.core.settings import ConfigError
    from rawproxy.service.cli import load_settings

    default = load_settings([], {})
    assert default.body_timeout == 60.0 and default.max_inflight_body_bytes == 256 * MIB
    flags = load_settings(["--body-timeout", "7", "--max-inflight-body-bytes", str(64 * MIB)], {})
    assert flags.body_timeout == 7.0 and flags.max_inflight_body_bytes == 64 * MIB
    env = load_settings([], {"PROXY_BODY_TIMEOUT": "9", "PROXY_MAX_INFLIGHT_BODY_BYTES": str(40 * MIB)})
    assert env.body_timeout == 9.0 and env.max_inflight_body_bytes == 40 * MIB
    with pytest.raises(ConfigError, match="PROXY_MAX_INFLIGHT_BODY_BYTES"):
        load_settings(["--max-inflight-body-bytes", str(8 * MIB)], {})  # below one body of 32 MiB
