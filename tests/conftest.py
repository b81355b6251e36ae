"""Fixtures that start the real programs: the Kimi simulator and the proxy, as subprocesses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Request bodies and headers captured from Claude Code 2.1.331, kept with the tests.
CLAUDE_CODE_FIXTURES = Path(__file__).parent / "fixtures" / "claude-code"
UPSTREAM_KEY = "sk-upstream-SECRET-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except Exception:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer in {timeout}s")


class Process:
    """A child process whose output is kept in a file, for tests that read logs."""

    def __init__(self, args: list[str], log_path: str, env: dict | None = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})

    def output(self) -> str:
        self._log.flush()
        with open(self.log_path) as f:
            return f.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


@dataclass
class Simulator:
    url: str
    process: Process

    def reset(self) -> None:
        http_json(self.url + "/_sim/reset", "POST", {})

    def requests(self) -> list[dict]:
        return http_json(self.url + "/_sim/requests")[1]

    def turns(self) -> list[dict]:
        return http_json(self.url + "/_sim/turns")[1]

    def base(self, fmt: str) -> str:
        return self.url + ("/anthropic" if fmt == "anthropic" else "/v1")


@dataclass
class Proxy:
    url: str
    upstream_format: str
    process: Process


def start_simulator(tmp_path_factory, kind: type = Simulator):
    """A simulator subprocess on a free port; the caller stops `.process`."""
    port = free_port()
    log = str(tmp_path_factory.mktemp("sim") / "simulator.log")
    proc = Process([sys.executable, "-m", "rawproxy.simulator", "--port", str(port)], log)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/_sim/turns", proc.proc)
    return kind(url, proc)


@pytest.fixture(scope="session")
def simulator(tmp_path_factory):
    sim = start_simulator(tmp_path_factory)
    yield sim
    sim.process.stop()


def start_proxy(simulator: Simulator, fmt: str, log: str, *extra: str, env: dict | None = None) -> Proxy:
    port = free_port()
    args = [sys.executable, "-m", "rawproxy", "--port", str(port), "--upstream", simulator.base(fmt),
            "--upstream-format", fmt, "--api-key", UPSTREAM_KEY, *extra]
    proc = Process(args, log, env)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", proc.proc)
    return Proxy(url, fmt, proc)


@pytest.fixture(scope="session", params=["anthropic", "openai"], ids=["up-anthropic", "up-openai"])
def proxy(request, simulator, tmp_path_factory):
    log = str(tmp_path_factory.mktemp("proxy") / f"proxy-{request.param}.log")
    p = start_proxy(simulator, request.param, log)
    yield p
    p.process.stop()


@pytest.fixture
def sim(simulator):
    simulator.reset()
    return simulator
