"""Real Redis for the tests: a redis-server (or a 3-node Redis Cluster) of each test's own
on free loopback ports with a temporary folder and no persistence, replicas of the proxy
sharing it, and a small round-robin TCP balancer in front of them (what nginx or a
Kubernetes Service does: each new connection to the next replica; a replica that refuses
is skipped). Everything started here is stopped by the fixture that started it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

from ..conftest import Proxy, Simulator, free_port, start_proxy
from .support import ENV_WITHOUT_PROXIES

INSTALL_HINT = ("redis-server is not installed: `make test` installs it (Debian's redis-server package); "
                "by hand: apt-get install -y redis-server")


def redis_binaries() -> tuple[str, str]:
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if not server or not cli:
        pytest.fail(INSTALL_HINT)
    return server, cli


def _free_port_pair() -> int:
    """A port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


class RedisServer:
    """One redis-server on 127.0.0.1; `stop()` and `start()` again keep its port (and, with
    no persistence, lose its data, as a crashed cache would)."""

    def __init__(self, folder: str, *args: str, port: int | None = None, password: str = "") -> None:
        self.server, self.cli_path = redis_binaries()
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        self.port = port or free_port()
        self.password = password
        self.args = list(args)
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        assert self.proc is None or self.proc.poll() is not None
        args = [self.server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", self.folder, *self.args]
        if self.password:
            args += ["--requirepass", self.password]
        self._log = open(os.path.join(self.folder, f"redis-{self.port}.log"), "a")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {self.port} did not start: {self.log()}")
            time.sleep(0.02)
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                reply = s.recv(64)
            return reply.startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def log(self) -> str:
        with open(os.path.join(self.folder, f"redis-{self.port}.log")) as f:
            return f.read()

    def cli(self, *args: str) -> str:
        env = {**os.environ, "REDISCLI_AUTH": self.password} if self.password else None
        out = subprocess.run([self.cli_path, "-p", str(self.port), *args], capture_output=True, text=True,
                             timeout=10, env=env)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def keys(self) -> list[str]:
        return [k for k in self.cli("--scan", "--pattern", "*").splitlines() if k]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


class RedisCluster:
    """Three masters, no replicas, slots spread by `redis-cli --cluster create`."""

    def __init__(self, folder: str) -> None:
        self.nodes = [RedisServer(os.path.join(folder, f"node-{i}"), port=_free_port_pair()) for i in range(3)]
        for node in self.nodes:
            node.args = ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{node.port}.conf",
                         "--cluster-node-timeout", "2000"]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        _, cli = redis_binaries()
        out = subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                              "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        deadline = time.monotonic() + 20
        while not all("cluster_state:ok" in n.cli("cluster", "info") for n in self.nodes):
            assert time.monotonic() < deadline, [n.cli("cluster", "info") for n in self.nodes]
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class _Pair:
    """A client connection and its backend connection: closed when both directions ended."""

    def __init__(self) -> None:
        self._ended = 0
        self._lock = threading.Lock()

    def ended_both(self) -> bool:
        with self._lock:
            self._ended += 1
            return self._ended == 2


class RoundRobin:
    """A TCP balancer on 127.0.0.1: each accepted connection goes to the next backend, a
    backend that refuses the connection is skipped (nginx's `proxy_next_upstream error`).
    `served[url]` counts the connections each backend took."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = list(backends)
        self.served: dict[str, int] = {b: 0 for b in backends}
        self._next = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)  # accept() wakes to see close(): closing alone does not wake it
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._open: set[socket.socket] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def replace(self, backends: list[str]) -> None:
        with self._lock:
            self.backends = list(backends)
            for b in backends:
                self.served.setdefault(b, 0)

    def _pick(self) -> tuple[str, socket.socket] | None:
        with self._lock:
            order = [self.backends[(self._next + i) % len(self.backends)] for i in range(len(self.backends))]
            self._next = (self._next + 1) % max(1, len(self.backends))
        for backend in order:
            host, port = backend.split("//", 1)[1].split(":")
            try:
                upstream = socket.create_connection((host, int(port)), timeout=2)
            except OSError:
                continue
            with self._lock:
                self.served[backend] += 1
            return backend, upstream
        return None

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            picked = self._pick()
            if picked is None:
                client.close()
                continue
            upstream = picked[1]
            upstream.settimeout(None)
            pair = _Pair()
            with self._lock:
                self._open.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst, pair), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, pair: _Pair) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            for s in (src, dst):  # one side broke: end both, as a balancer does
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        finally:
            if pair.ended_both():
                with self._lock:
                    self._open.difference_update((src, dst))
                src.close()
                dst.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            live = list(self._open)
            self._open.clear()
        for s in live:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self._thread.join(5)


@dataclass
class Replicas:
    """Proxies (separate processes) on one store, behind a RoundRobin."""

    sim: Simulator
    fmt: str
    store: str
    folder: str
    extra: tuple[str, ...] = ()
    env: dict = field(default_factory=dict)
    proxies: list[Proxy] = field(default_factory=list)
    balancer: RoundRobin | None = None
    started: int = 0

    def start(self, count: int = 3) -> Replicas:
        self.proxies = [self._one() for _ in range(count)]
        urls = [p.url for p in self.proxies]
        if self.balancer is None:
            self.balancer = RoundRobin(urls)
        else:
            self.balancer.replace(urls)
        return self

    def _one(self) -> Proxy:
        self.started += 1
        log = os.path.join(self.folder, f"replica-{self.started}.log")
        return start_proxy(self.sim, self.fmt, log, "--store", self.store, *self.extra,
                           env={**ENV_WITHOUT_PROXIES, **self.env})

    @property
    def url(self) -> str:
        assert self.balancer is not None
        return self.balancer.url

    def logs(self) -> str:
        return "".join(p.process.output() for p in self.proxies)

    def stop_all(self) -> None:
        for p in self.proxies:
            p.process.stop()

    def close(self) -> None:
        self.stop_all()
        if self.balancer is not None:
            self.balancer.close()


def fresh_connections() -> httpx.Client:
    """An HTTP client that opens a new connection for every request, so a round-robin
    balancer sends consecutive turns of one conversation to different replicas (the
    openai SDK and LangChain take it)."""
    return httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0))


def fresh_connections_anthropic():
    """The same for the anthropic SDK, which runs on httpx2."""
    import httpx2

    return httpx2.Client(timeout=30, limits=httpx2.Limits(max_keepalive_connections=0))
