"""Bad input and slow or greedy clients: each gets the right 4xx (or a closed connection
when it does not speak HTTP), and the proxy keeps serving everyone else."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from .support import (
    ANTHROPIC_BODY,
    OPENAI_BODY,
    connect,
    fsim,
    health_ok,
    proxies,
    raw_request,
    read_until_closed,
    sim,
    split_response,
)

_ = (fsim, sim, proxies)  # fixtures


@pytest.fixture(scope="module")
def proxy(fsim, tmp_path_factory):
    from ..conftest import start_proxy

    p = start_proxy(fsim, "anthropic", str(tmp_path_factory.mktemp("limits") / "proxy.log"),
                    "--header-timeout", "2", "--keepalive-timeout", "1")
    yield p
    p.process.stop()


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions"])
def test_bad_bodies_get_the_right_4xx_in_each_dialect(proxy, path):
    anthropic = path == "/v1/messages"

    def check(r: httpx.Response, status: int, needle: str) -> None:
        assert r.status_code == status, r.text
        doc = r.json()
        if anthropic:
            assert doc["type"] == "error" and needle in doc["error"]["message"]
        else:
            assert needle in doc["error"]["message"] and "type" in doc["error"]
        assert health_ok(proxy.url)

    json_ct = {"content-type": "application/json"}
    check(httpx.post(proxy.url + path, content=b'{"model": "m", "messages": [', headers=json_ct), 400, "not valid JSON")
    check(httpx.post(proxy.url + path, content=b'[{"model": "m"}]', headers=json_ct), 400, "JSON object")
    check(httpx.post(proxy.url + path, content=json.dumps(ANTHROPIC_BODY), headers={"content-type": "text/plain"}),
          415, "content-type")
    big = b"x" * (64 * 1024 * 1024)
    r = httpx.post(proxy.url + path, content=big, headers=json_ct, timeout=30)
    check(r, 413, "over the limit")
    if anthropic:
        assert r.json()["error"]["type"] == "request_too_large"

    def chunks():  # no content-length: the limit is found while reading
        for i in range(0, len(big), 1 << 20):
            yield big[i:i + (1 << 20)]

    check(httpx.post(proxy.url + path, content=chunks(), headers=json_ct, timeout=30), 413, "over the limit")


def test_a_megabyte_of_headers_gets_431(proxy):
    r = httpx.post(proxy.url + "/v1/messages", json=ANTHROPIC_BODY,
                   headers={f"x-filler-{i}": "v" * 1000 for i in range(1024)}, timeout=10)
    assert r.status_code == 431
    assert health_ok(proxy.url)


@pytest.mark.parametrize("garbage", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),  # a TLS ClientHello
    b"\x00\xff\xfe garbage that is not HTTP at all\r\n\r\n",
    b"SSH-2.0-OpenSSH_9.6\r\n",  # another protocol on the wrong port
])
def test_garbage_instead_of_http_is_refused_and_closed(proxy, garbage):
    sock = connect(proxy.url, timeout=5)
    sock.sendall(garbage)
    answer = read_until_closed(sock, limit=5)
    sock.close()
    # A 400 (or a 408 once the header timeout passes, for a line that never ends) and a
    # close, or just a close: never a hang, never a 2xx.
    assert answer == b"" or split_response(answer)[0] in (400, 408)
    assert health_ok(proxy.url)


def test_300_slow_header_connections_do_not_hold_up_a_normal_request(proxy):
    slow = []
    try:
        for _ in range(300):
            s = connect(proxy.url)
            s.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: appl")  # and nothing more
            slow.append(s)
        time.sleep(0.2)
        started = time.monotonic()
        r = httpx.post(proxy.url + "/v1/chat/completions", json=OPENAI_BODY, timeout=10)
        assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "stop"
        assert time.monotonic() - started < 1.0
        # The header timeout (2 s here) then cuts the slow ones off, with a 408.
        slow[0].settimeout(5)
        status, _, _ = split_response(read_until_closed(slow[0], limit=5))
        assert status == 408
    finally:
        for s in slow:
            s.close()
    assert health_ok(proxy.url)


def test_idle_keep_alive_connections_are_closed(proxy):
    sock = connect(proxy.url, timeout=5)
    sock.sendall(raw_request(proxy.url, "GET", "/health"))
    first = sock.recv(65536)
    while b"\r\n\r\n" not in first or not first.endswith(b"}"):  # the whole small JSON answer
        first += sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    assert read_until_closed(sock, limit=5) == b""  # then the proxy closes the quiet connection
    assert 0.8 < time.monotonic() - started < 3.0
    sock.close()


def test_connections_over_the_cap_get_a_503_in_their_dialect(sim, proxies):
    proxy = proxies("anthropic", "--max-connections", "10", sim=sim)
    held = []
    try:
        # Ten clients at rest between requests: a newcomer takes the place of one of them.
        for _ in range(10):
            s = connect(proxy.url)
            s.sendall(raw_request(proxy.url, "GET", "/health"))
            assert s.recv(65536).startswith(b"HTTP/1.1 200")  # open, kept alive
            held.append(s)
        r = httpx.post(proxy.url + "/v1/messages", json=ANTHROPIC_BODY, timeout=10)
        assert r.status_code == 200
        for s in held:
            s.close()
        held.clear()
        time.sleep(0.2)

        # Ten clients in the middle of a request: nobody gives way, the newcomer gets a 503.
        for _ in range(10):
            s = connect(proxy.url)
            s.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\n")
            held.append(s)
        time.sleep(0.2)
        r = httpx.post(proxy.url + "/v1/messages", json=ANTHROPIC_BODY, timeout=10)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["type"] == "overloaded_error" and "limit of 10" in r.json()["error"]["message"]
        r = httpx.post(proxy.url + "/v1/chat/completions", json=OPENAI_BODY, timeout=10)
        assert r.status_code == 503 and "limit of 10" in r.json()["error"]["message"]
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    r = httpx.post(proxy.url + "/v1/messages", json=ANTHROPIC_BODY, timeout=10)
    assert r.status_code == 200
