"""Shared by the production tests: a simulator of their own (its standing faults must
not reach other tests), proxies started per test with the flags under test, and small
raw-socket helpers for what HTTP clients hide (unfinished bodies, closed connections)."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import urllib.request

import pytest

from ..conftest import Process, Simulator, free_port, start_proxy, start_simulator, wait_http

ANTHROPIC_BODY = {"model": "claude-opus-5-5", "max_tokens": 1000, "messages": [{"role": "user", "content": "Hello!"}]}
OPENAI_BODY = {"model": "kimi-k2.5", "messages": [{"role": "user", "content": "Hello!"}]}
# Settings a developer's shell might carry that would change what a test proves.
ENV_WITHOUT_PROXIES = {k: "" for k in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy",
                                       "PROXY_API_KEYS", "PROXY_ALLOW_OPEN", "LOG_FORMAT", "DEBUG")}


class FaultySimulator(Simulator):
    def fault(self, value: str) -> None:
        """A fault for every later request (the proxy does not forward x-sim-fault)."""
        req = urllib.request.Request(self.url + "/_sim/fault", data=json.dumps({"fault": value}).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200


@pytest.fixture(scope="session")
def fsim(tmp_path_factory):
    sim = start_simulator(tmp_path_factory, FaultySimulator)
    yield sim
    sim.process.stop()


@pytest.fixture
def sim(fsim):
    fsim.reset()
    yield fsim
    fsim.reset()


@pytest.fixture
def proxies(tmp_path):
    """start(fmt, *flags, env=...) -> Proxy; every proxy started is stopped afterwards."""
    started = []

    def start(fmt: str, *flags: str, sim: Simulator, env: dict | None = None):
        p = start_proxy(sim, fmt, str(tmp_path / f"proxy-{len(started)}.log"), *flags,
                        env={**ENV_WITHOUT_PROXIES, **(env or {})})
        started.append(p)
        return p

    yield start
    for p in started:
        p.process.stop()


def start_raw_proxy(tmp_path, *args: str, env: dict | None = None, name: str = "proxy") -> tuple[str, Process]:
    """A proxy with exactly these flags (no default upstream key), on a free port."""
    port = free_port()
    proc = Process([sys.executable, "-m", "rawproxy", "--port", str(port), *args], str(tmp_path / f"{name}.log"),
                   {**ENV_WITHOUT_PROXIES, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", proc.proc)
    return url, proc


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def raw_request(url: str, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> bytes:
    host = url.split("//", 1)[1]
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body or method == "POST":
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def connect(url: str, timeout: float = 10.0) -> socket.socket:
    host, port = url.split("//", 1)[1].split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def read_until_closed(sock: socket.socket, limit: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (or `limit` passes)."""
    deadline = time.monotonic() + limit
    chunks = []
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def dechunk(body: bytes) -> tuple[bytes, bool]:
    """(payload, complete): complete only when the terminating zero-size chunk arrived."""
    out, pos = [], 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            return b"".join(out), False
        size = int(body[pos:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out), True
        out.append(body[end + 2:end + 2 + size])
        pos = end + 2 + size + 2
        if pos > len(body):
            return b"".join(out), False


def split_response(raw: bytes) -> tuple[int, dict, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def health_ok(url: str) -> bool:
    with urllib.request.urlopen(url + "/health", timeout=5) as resp:
        return resp.status == 200 and json.loads(resp.read())["status"] == "ok"


def metric(url: str, name: str, headers: dict | None = None) -> float:
    """The sum of every sample of `name` whose line starts with it (labels included)."""
    req = urllib.request.Request(url + "/metrics", headers=headers or {})
    with urllib.request.urlopen(req, timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def eventually(check, timeout: float = 3.0):
    """`check()` once it is truthy (a stream's bookkeeping ends just after its last byte
    reached the client), else its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


class ThreadedServer:
    """A loopback listener serving each connection on a thread of its own (`_serve`)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]

    def start(self) -> None:
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        raise NotImplementedError
