"""Access control and secrets: access keys gate every route but /health, a client's key
is never sent upstream once access keys are set, the upstream key appears nowhere a
client or a log reader could see it, and an open proxy holding a key is refused."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import anthropic
import httpx
import openai
import pytest

from ..conftest import ROOT, UPSTREAM_KEY, free_port
from .support import (
    ANTHROPIC_BODY,
    ENV_WITHOUT_PROXIES,
    OPENAI_BODY,
    fsim,
    proxies,
    sim,
    start_raw_proxy,
)

_ = (fsim, sim, proxies)  # fixtures
ACCESS = ["access-key-one-7f3a", "access-key-two-91bc"]


def test_access_keys_are_required_everywhere_but_health(sim, proxies):
    proxy = proxies("openai", sim=sim, env={**ENV_WITHOUT_PROXIES, "PROXY_API_KEYS": ",".join(ACCESS)})

    for headers in ({}, {"x-api-key": "wrong"}, {"authorization": "Bearer wrong"},
                    {"x-api-key": ACCESS[0] + "x"}, {"authorization": "Basic " + ACCESS[0]}):
        r = httpx.post(proxy.url + "/v1/messages", json=ANTHROPIC_BODY, headers=headers)
        assert r.status_code == 401
        assert r.json()["type"] == "error" and r.json()["error"]["type"] == "authentication_error"
        r = httpx.post(proxy.url + "/v1/chat/completions", json=OPENAI_BODY, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        for path in ("/v1/models", "/metrics", "/v1/messages/count_tokens", "/nowhere"):
            assert httpx.request("GET" if path != "/v1/messages/count_tokens" else "POST", proxy.url + path,
                                 json=ANTHROPIC_BODY, headers=headers).status_code == 401
    assert httpx.get(proxy.url + "/health").status_code == 200  # probes need no key

    # Either key, either header, both SDKs.
    a = anthropic.Anthropic(base_url=proxy.url, api_key=ACCESS[0], max_retries=0)
    assert a.messages.create(**ANTHROPIC_BODY).stop_reason == "end_turn"
    o = openai.OpenAI(base_url=proxy.url + "/v1", api_key=ACCESS[1], max_retries=0)
    assert o.chat.completions.create(**OPENAI_BODY).choices[0].finish_reason == "stop"
    assert httpx.get(proxy.url + "/metrics", headers={"authorization": f"Bearer {ACCESS[1]}"}).status_code == 200


def test_an_access_key_is_never_forwarded_upstream(sim, tmp_path):
    # No upstream key configured: without access keys the client's key would be passed on.
    # The simulator accepts any non-empty key, so its 401 proves no key reached it.
    url, proc = start_raw_proxy(tmp_path, "--upstream", sim.base("anthropic"), "--upstream-format", "anthropic",
                                env={**ENV_WITHOUT_PROXIES, "PROXY_API_KEYS": ACCESS[0]})
    try:
        r = httpx.post(url + "/v1/messages", json=ANTHROPIC_BODY, headers={"x-api-key": ACCESS[0]})
        assert r.status_code == 401 and "Invalid Authentication" in r.json()["error"]["message"]
        assert sim.requests()[-1]["headers"].get("x-api-key") is None
    finally:
        proc.stop()


class _EchoingUpstream:
    """An upstream that quotes back the key it was sent in its 401, as some do."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                key = next((line.split(b":", 1)[1].strip() for line in data.split(b"\r\n")
                            if line.lower().startswith(b"x-api-key")), b"")
                body = json.dumps({"type": "error", "error": {
                    "type": "authentication_error", "message": f"Incorrect API key provided: {key.decode()}"}}).encode()
                conn.sendall(b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\nconnection: close\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(body), body))

    def close(self) -> None:
        self.listener.close()


def test_the_upstream_key_never_reaches_a_response_a_log_or_a_metric(sim, proxies, tmp_path):
    proxy = proxies("anthropic", sim=sim, env={**ENV_WITHOUT_PROXIES, "DEBUG": "1"})
    seen: list[str] = []

    def keep(r: httpx.Response) -> httpx.Response:
        seen.append(str(r.headers) + r.text)
        return r

    keep(httpx.post(proxy.url + "/v1/messages", json=ANTHROPIC_BODY))
    keep(httpx.post(proxy.url + "/v1/messages", json={**ANTHROPIC_BODY, "stream": True}))
    keep(httpx.post(proxy.url + "/v1/chat/completions", json={**OPENAI_BODY, "stream": True}))
    keep(httpx.post(proxy.url + "/v1/messages/count_tokens", json=ANTHROPIC_BODY))
    keep(httpx.get(proxy.url + "/v1/models"))
    keep(httpx.post(proxy.url + "/v1/messages", content=b"{bad"))
    sim.fault("status=401")
    keep(httpx.post(proxy.url + "/v1/messages", json=ANTHROPIC_BODY))
    sim.fault("reset-after=2")
    with httpx.stream("POST", proxy.url + "/v1/chat/completions", json={**OPENAI_BODY, "stream": True}) as r:
        got = b""
        with pytest.raises(httpx.RemoteProtocolError):  # a cut stream stays unfinished
            for chunk in r.iter_raw():
                got += chunk
        seen.append(str(r.headers) + got.decode())
        assert b'{"error"' in got
    sim.fault("")
    keep(httpx.get(proxy.url + "/health"))
    keep(httpx.get(proxy.url + "/metrics"))

    echo = _EchoingUpstream()
    url, proc = start_raw_proxy(tmp_path, "--upstream", f"http://127.0.0.1:{echo.port}/anthropic",
                                "--upstream-format", "anthropic", "--api-key", UPSTREAM_KEY, "--debug",
                                env=ENV_WITHOUT_PROXIES, name="echo-proxy")
    try:
        r = keep(httpx.post(url + "/v1/messages", json=ANTHROPIC_BODY))
        assert r.status_code == 401 and "<redacted>" in r.json()["error"]["message"]
        keep(httpx.get(url + "/metrics"))
        echo_logs = proc.output()
    finally:
        proc.stop()
        echo.close()

    logs = proxy.process.output() + echo_logs
    assert "DEBUG" in logs and "rawproxy.access" in logs  # the logs under test were written
    for text in [*seen, logs]:
        assert UPSTREAM_KEY not in text
        assert UPSTREAM_KEY[-10:] not in text  # not even a tail of it


def test_an_upstream_key_on_a_public_address_without_access_keys_is_refused():
    env = {**ENV_WITHOUT_PROXIES, "ZENMUX_API_KEY": UPSTREAM_KEY}
    for args, extra in ((["--host", "0.0.0.0"], {}), ([], {"PROXY_HOST": "0.0.0.0"})):
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "rawproxy", "--port", str(free_port()), *args],
                              cwd=ROOT, env={**_base_env(), **env, **extra}, capture_output=True, text=True, timeout=20)
        assert done.returncode == 2, done
        assert time.monotonic() - started < 10
        message = done.stderr
        assert "refusing to listen on 0.0.0.0" in message
        assert "PROXY_API_KEYS" in message and "--allow-open" in message and "PROXY_ALLOW_OPEN=1" in message
        assert UPSTREAM_KEY not in message + done.stdout


def _base_env() -> dict:
    import os

    return dict(os.environ)


@pytest.mark.parametrize("env,ok", [
    ({"PROXY_HOST": "0.0.0.0", "ZENMUX_API_KEY": "k"}, False),
    ({"PROXY_HOST": "0.0.0.0", "ZENMUX_API_KEY": "k", "PROXY_API_KEYS": "a"}, True),
    ({"PROXY_HOST": "0.0.0.0", "ZENMUX_API_KEY": "k", "PROXY_ALLOW_OPEN": "1"}, True),
    ({"PROXY_HOST": "0.0.0.0"}, True),            # no upstream key: clients bring their own
    ({"PROXY_HOST": "::1", "ZENMUX_API_KEY": "k"}, True),
    ({"PROXY_HOST": "localhost", "ZENMUX_API_KEY": "k"}, True),
    ({"PROXY_HOST": "192.168.1.5", "ZENMUX_API_KEY": "k"}, False),
])
def test_exposure_rule(env, ok):
    from rawproxy.core.settings import ConfigError
    from rawproxy.service.cli import load_settings

    if ok:
        load_settings([], env)
    else:
        with pytest.raises(ConfigError, match="--allow-open"):
            load_settings([], env)
