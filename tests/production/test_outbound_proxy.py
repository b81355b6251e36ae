"""Outbound proxy: --outbound-proxy, or HTTP(S)_PROXY from the environment, carries the
upstream traffic; NO_PROXY exempts the upstream. Proven with a forward proxy written
here, which sees the absolute-form requests httpcore sends to an HTTP proxy."""

from __future__ import annotations

import base64
import socket
import threading
from urllib.parse import urlsplit

import anthropic
import httpx
import pytest

from .support import ANTHROPIC_BODY, ENV_WITHOUT_PROXIES, ThreadedServer, fsim, proxies, sim, start_raw_proxy

_ = (fsim, sim, proxies)  # fixtures


class ForwardProxy(ThreadedServer):
    """HTTP forward proxy, no CONNECT: one request per connection, relayed byte for byte."""

    def __init__(self, hosts: dict[str, str] | None = None) -> None:
        super().__init__()
        self.hosts = hosts or {}  # names only this proxy can resolve
        self.seen: list[tuple[str, str | None]] = []  # (request line, proxy-authorization)
        self.start()


    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
            headers = [line for line in lines[1:] if line]
            auth = next((h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("proxy-authorization")), None)
            self.seen.append((lines[0], auth))
            length = next((int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length")), 0)
            while len(body) < length:
                body += conn.recv(65536)
            url = urlsplit(target)  # absolute-form: the proxy learns the origin from it
            kept = [h for h in headers if h.split(":")[0].lower() not in ("connection", "proxy-authorization")]
            request = (f"{method} {url.path}{'?' + url.query if url.query else ''} {version}\r\n"
                       + "".join(h + "\r\n" for h in kept) + "connection: close\r\n\r\n").encode() + body
            with socket.create_connection((self.hosts.get(url.hostname, url.hostname), url.port)) as upstream:
                upstream.sendall(request)
                while True:
                    chunk = upstream.recv(65536)
                    if not chunk:
                        break
                    conn.sendall(chunk)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def forward():
    fp = ForwardProxy({"kimi.invalid": "127.0.0.1"})
    yield fp
    fp.close()


def _ask(url: str) -> None:
    client = anthropic.Anthropic(base_url=url, api_key="any", max_retries=0)
    with client.messages.stream(**ANTHROPIC_BODY) as stream:
        assert stream.get_final_message().stop_reason == "end_turn"
    assert client.messages.create(**ANTHROPIC_BODY).stop_reason == "end_turn"


def test_outbound_proxy_flag_with_credentials(sim, forward, tmp_path):
    sim_port = urlsplit(sim.url).port
    url, proc = start_raw_proxy(tmp_path, "--upstream", sim.base("anthropic"), "--api-key", "sk-up",
                                "--outbound-proxy", f"http://proxyuser:pr0xy-pass@127.0.0.1:{forward.port}",
                                env=ENV_WITHOUT_PROXIES)
    try:
        _ask(url)
        assert [line for line, _ in forward.seen] == [
            f"POST http://127.0.0.1:{sim_port}/anthropic/v1/messages HTTP/1.1"] * 2
        expected = "Basic " + base64.b64encode(b"proxyuser:pr0xy-pass").decode()
        assert all(auth == expected for _, auth in forward.seen)
        log = proc.output()
        assert f"via outbound proxy http://127.0.0.1:{forward.port}" in log and "pr0xy-pass" not in log
    finally:
        proc.stop()


def test_http_proxy_from_the_environment_and_no_proxy(sim, forward, tmp_path):
    # The upstream is named by a host only the forward proxy can resolve (kimi.invalid is
    # 127.0.0.1 to it alone): an answer proves the request went through the proxy.
    sim_port = urlsplit(sim.url).port
    upstream = f"http://kimi.invalid:{sim_port}/anthropic"
    env = {**ENV_WITHOUT_PROXIES, "HTTP_PROXY": f"http://127.0.0.1:{forward.port}"}
    url, proc = start_raw_proxy(tmp_path, "--upstream", upstream, "--api-key", "sk-up", env=env)
    try:
        _ask(url)
        assert [line for line, _ in forward.seen] == [f"POST {upstream}/v1/messages HTTP/1.1"] * 2
    finally:
        proc.stop()

    # NO_PROXY names the upstream: the proxy is bypassed (and the name resolves nowhere).
    url, proc = start_raw_proxy(tmp_path, "--upstream", upstream, "--api-key", "sk-up", "--connect-timeout", "3",
                                env={**env, "NO_PROXY": "example.com,.invalid"}, name="bypass")
    try:
        r = httpx.post(url + "/v1/messages", json=ANTHROPIC_BODY, timeout=20)
        assert r.status_code == 502 and "kimi.invalid" in r.json()["error"]["message"]
        assert len(forward.seen) == 2
    finally:
        proc.stop()

    # A loopback upstream never takes the environment's proxy (only --outbound-proxy would).
    url, proc = start_raw_proxy(tmp_path, "--upstream", sim.base("anthropic"), "--api-key", "sk-up",
                                env=env, name="loopback")
    try:
        _ask(url)
        assert len(forward.seen) == 2
    finally:
        proc.stop()


class Socks5Proxy(ThreadedServer):
    """SOCKS5, no authentication, CONNECT only: enough to see httpcore's socks path work."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[tuple[str, int]] = []
        self.start()


    @staticmethod
    def _exactly(conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            _, n = self._exactly(conn, 2)
            self._exactly(conn, n)
            conn.sendall(b"\x05\x00")  # no authentication
            _, cmd, _, atyp = self._exactly(conn, 4)
            if atyp == 1:
                host = socket.inet_ntoa(self._exactly(conn, 4))
            elif atyp == 3:
                host = self._exactly(conn, self._exactly(conn, 1)[0]).decode()
            else:
                return
            port = int.from_bytes(self._exactly(conn, 2), "big")
            self.targets.append((host, port))
            upstream = socket.create_connection((host, port))
            conn.sendall(b"\x05\x00\x00\x01" + socket.inet_aton("0.0.0.0") + b"\x00\x00")

            def pump(src: socket.socket, dst: socket.socket) -> None:
                try:
                    while chunk := src.recv(65536):
                        dst.sendall(chunk)
                except OSError:
                    pass
                finally:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass

            other = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
            other.start()
            pump(conn, upstream)
            other.join(30)
            upstream.close()

    def close(self) -> None:
        self.listener.close()


def test_socks5_outbound_proxy(sim, tmp_path):
    socks = Socks5Proxy()
    url, proc = start_raw_proxy(tmp_path, "--upstream", sim.base("anthropic"), "--api-key", "sk-up",
                                "--outbound-proxy", f"socks5://127.0.0.1:{socks.port}", env=ENV_WITHOUT_PROXIES)
    try:
        _ask(url)
        assert socks.targets and all(t == ("127.0.0.1", urlsplit(sim.url).port) for t in socks.targets)
    finally:
        proc.stop()
        socks.close()


@pytest.mark.parametrize("flag,upstream,env,expected", [
    (None, "https://api.moonshot.ai/v1", {"HTTPS_PROXY": "http://p:3128"}, "http://p:3128"),
    (None, "https://api.moonshot.ai/v1", {"https_proxy": "http://low:1", "HTTPS_PROXY": "http://up:2"}, "http://low:1"),
    (None, "https://api.moonshot.ai/v1", {"HTTP_PROXY": "http://p:3128"}, ""),  # HTTP_PROXY is for http://
    (None, "http://10.0.0.5:8000/v1", {"HTTP_PROXY": "p:3128"}, "http://p:3128"),
    (None, "https://api.moonshot.ai/v1", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "moonshot.ai"}, ""),
    (None, "https://api.moonshot.ai/v1", {"HTTPS_PROXY": "http://p:1", "no_proxy": ".moonshot.ai"}, ""),
    (None, "https://api.moonshot.ai/v1", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, ""),
    (None, "https://api.moonshot.ai/v1", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "notmoonshot.ai"}, "http://p:1"),
    (None, "https://api.moonshot.ai/v1", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "moonshot.ai:8443"}, "http://p:1"),
    (None, "http://10.1.2.3:8000/v1", {"HTTP_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"}, ""),
    (None, "http://127.0.0.1:8000/v1", {"HTTP_PROXY": "http://p:1"}, ""),  # loopback: not via the environment
    (None, "http://localhost:8000/v1", {"HTTP_PROXY": "http://p:1"}, ""),
    ("http://p:1", "http://127.0.0.1:8000/v1", {}, "http://p:1"),  # ...but the flag is obeyed
    ("socks5://127.0.0.1:1080", "https://api.moonshot.ai/v1", {}, "socks5://127.0.0.1:1080"),
    ("socks5://127.0.0.1:1080", "https://api.moonshot.ai/v1", {"NO_PROXY": "api.moonshot.ai"}, ""),
])
def test_outbound_proxy_resolution(flag, upstream, env, expected):
    from rawproxy.upstream.outbound import resolve_outbound_proxy

    assert resolve_outbound_proxy(flag, upstream, env) == expected


def test_a_bad_outbound_proxy_is_refused_at_start_up():
    from rawproxy.core.settings import ConfigError
    from rawproxy.service.cli import load_settings

    with pytest.raises(ConfigError, match="outbound proxy"):
        load_settings(["--outbound-proxy", "ftp://p:21"], {})
