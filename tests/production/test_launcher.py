"""`rawproxy claude|codex [ARGS]` and `rawproxy env ...`, run as a user runs them, with a
stand-in for each client: a small script that records its arguments and environment,
sends one request through the proxy it was pointed at, and exits with a chosen code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from ..conftest import ROOT, UPSTREAM_KEY, free_port
from .support import ENV_WITHOUT_PROXIES, eventually, fsim, proxies, sim

_ = (fsim, sim, proxies)  # fixtures

ACCESS_KEY = "test-access-key-0123456789"

FAKE_CLIENT = '''#!{python}
"""A stand-in for Claude Code or Codex: records what it was given, asks the proxy once."""
import json, os, sys, time, urllib.request

args = sys.argv[1:]
names = ("ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY", "RAWPROXY_CLIENT_KEY", "NO_PROXY",
         "no_proxy", "API_TIMEOUT_MS")
record = {{"argv": args, "env": {{k: os.environ.get(k) for k in names}}, "pid": os.getpid()}}
config = {{}}
for flag, value in zip(args, args[1:]):
    if flag == "-c":
        key, _, raw = value.partition("=")
        config[key] = json.loads(raw) if raw.startswith('"') else raw
if os.environ.get("FAKE_KIND") == "claude":
    base, key = os.environ["ANTHROPIC_BASE_URL"], os.environ["ANTHROPIC_AUTH_TOKEN"]
    path, body = "/v1/messages", {{"model": "claude-sonnet-4-5", "max_tokens": 200,
                                   "messages": [{{"role": "user", "content": "hello"}}]}}
else:
    base = config["model_providers.rawproxy.base_url"].removesuffix("/v1")
    key = os.environ[config["model_providers.rawproxy.env_key"]]
    path, body = "/v1/responses", {{"model": config.get("model", "kimi-k2.5"), "input": "hello"}}
opener = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))
headers = {{"authorization": "Bearer " + key, "content-type": "application/json"}}
with opener.open(urllib.request.Request(base + "/health", headers=headers), timeout=10) as r:
    record["health"] = json.loads(r.read())
request = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers=headers)
with opener.open(request, timeout=30) as r:
    record["status"] = r.status
    record["answer"] = json.loads(r.read())
with open(os.environ["FAKE_RECORD"], "a") as f:
    f.write(json.dumps(record) + "\\n")
wait_for = os.environ.get("FAKE_WAIT_FOR")
if wait_for:
    deadline = time.monotonic() + 60
    while not os.path.exists(wait_for) and time.monotonic() < deadline:
        time.sleep(0.05)
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
'''


class Launcher:
    """Runs `python -m rawproxy FLAGS <command> ARGS` with a fake client and a state folder
    of the test's own."""

    def __init__(self, tmp_path: Path, sim, fmt: str = "openai") -> None:
        self.tmp = tmp_path
        self.fake = tmp_path / "fake-client"
        self.fake.write_text(FAKE_CLIENT.format(python=sys.executable))
        self.fake.chmod(0o755)
        self.records = tmp_path / "records.jsonl"
        self.state = tmp_path / "state"
        self.port = free_port()  # the configured address: nothing listens there unless a test starts a proxy
        self.flags = ["--upstream", sim.base(fmt), "--upstream-format", fmt, "--api-key", UPSTREAM_KEY,
                      "--port", str(self.port)]

    def env(self, kind: str, **extra: str) -> dict[str, str]:
        return {**os.environ, **ENV_WITHOUT_PROXIES, "XDG_STATE_HOME": str(self.state), "FAKE_KIND": kind,
                "CLAUDE_BIN": str(self.fake), "CODEX_BIN": str(self.fake), "FAKE_RECORD": str(self.records),
                **extra}

    def start(self, kind: str, *args: str, flags: list[str] | None = None, **env: str) -> subprocess.Popen:
        command = [sys.executable, "-m", "rawproxy", *(self.flags if flags is None else flags), kind, *args]
        return subprocess.Popen(command, cwd=ROOT, env=self.env(kind, **env), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)

    def run(self, kind: str, *args: str, flags: list[str] | None = None, **env: str) -> subprocess.CompletedProcess:
        proc = self.start(kind, *args, flags=flags, **env)
        try:
            out, err = proc.communicate(timeout=90)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def recorded(self) -> list[dict]:
        if not self.records.exists():
            return []
        return [json.loads(line) for line in self.records.read_text().splitlines()]

    def folder(self) -> Path:
        return self.state / "rawproxy"


def merge(into: dict, doc: dict) -> None:
    for key, value in doc.items():
        if isinstance(value, dict):
            merge(into.setdefault(key, {}), value)
        else:
            into[key] = value


def answers(url: str) -> bool:
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url + "/health", timeout=2):
            return True
    except OSError:
        return False


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def assert_background_proxy_stopped(launcher: Launcher, url: str, pid: int) -> None:
    assert eventually(lambda: gone(pid), timeout=10), f"the background proxy (pid {pid}) is still running"
    assert not answers(url)
    assert not list(launcher.folder().glob("launcher-*.json")), "the launchers' state file was left behind"


def test_claude_through_a_background_proxy_started_and_stopped(sim, tmp_path):
    launcher = Launcher(tmp_path, sim, "anthropic")
    run = launcher.run("claude", "-p", "say hello", "--output-format", "json", FAKE_EXIT="7",
                       NO_PROXY="corp.example", ANTHROPIC_API_KEY="sk-ant-not-for-the-proxy")
    assert run.returncode == 7, run.stderr  # the client's own exit code
    [record] = launcher.recorded()
    assert record["argv"] == ["-p", "say hello", "--output-format", "json"]  # passed through untouched
    env = record["env"]
    url = env["ANTHROPIC_BASE_URL"]
    assert url.startswith("http://127.0.0.1:") and url != f"http://127.0.0.1:{launcher.port}"
    assert env["ANTHROPIC_AUTH_TOKEN"] == "rawproxy"  # a placeholder: the proxy holds the upstream key
    assert env["ANTHROPIC_API_KEY"] is None  # a real Anthropic key in the shell is not sent along
    for name in ("NO_PROXY", "no_proxy"):
        assert env[name].split(",")[:3] == ["corp.example", "127.0.0.1", "localhost"], env[name]
    assert int(env["API_TIMEOUT_MS"]) >= 600_000
    assert record["status"] == 200 and record["answer"]["type"] == "message"
    assert len(sim.turns()) == 1  # the request went through the proxy to the upstream
    assert f"started a proxy on {url}" in run.stderr
    logs = list(launcher.folder().glob("proxy-*.log"))
    assert len(logs) == 1 and "POST /v1/messages 200" in logs[0].read_text()
    assert_background_proxy_stopped(launcher, url, int(record["health"]["worker"]))


def test_codex_through_a_background_proxy_started_and_stopped(sim, tmp_path):
    launcher = Launcher(tmp_path, sim, "anthropic")
    run = launcher.run("codex", "exec", "--skip-git-repo-check", "say hello")
    assert run.returncode == 0, run.stderr
    [record] = launcher.recorded()
    argv = record["argv"]
    assert argv[-3:] == ["exec", "--skip-git-repo-check", "say hello"]
    config: dict = {}
    for flag, value in zip(argv, argv[1:]):
        if flag == "-c":
            merge(config, tomllib.loads(value))  # each override is valid TOML, as Codex parses it
    provider = config["model_providers"]["rawproxy"]
    assert provider["wire_api"] == "responses" and provider["env_key"] == "RAWPROXY_CLIENT_KEY"
    assert provider["base_url"].startswith("http://127.0.0.1:") and provider["base_url"].endswith("/v1")
    assert provider["stream_idle_timeout_ms"] >= 600_000
    assert config["model_provider"] == "rawproxy" and config["model"] == "kimi-k2.5"
    assert record["env"]["RAWPROXY_CLIENT_KEY"] == "rawproxy"
    assert record["status"] == 200 and record["answer"]["object"] == "response"
    assert_background_proxy_stopped(launcher, provider["base_url"].removesuffix("/v1"),
                                    int(record["health"]["worker"]))


def test_codex_keeps_a_model_the_user_chose(sim, tmp_path):
    launcher = Launcher(tmp_path, sim)
    run = launcher.run("codex", "exec", "-m", "kimi-k2-thinking", "hi")
    assert run.returncode == 0, run.stderr
    [record] = launcher.recorded()
    assert not any(a.startswith("model=") for a in record["argv"]), record["argv"]
    assert record["argv"][-4:] == ["exec", "-m", "kimi-k2-thinking", "hi"]


def test_a_proxy_already_listening_is_used_and_left_running(sim, proxies, tmp_path):
    env = {"PROXY_API_KEYS": f"{ACCESS_KEY},second-key"}
    running = proxies("openai", sim=sim, env=env)
    launcher = Launcher(tmp_path, sim)
    flags = ["--port", running.url.rsplit(":", 1)[1]]
    for kind in ("claude", "codex"):
        run = launcher.run(kind, "hi", flags=flags, **env)
        assert run.returncode == 0, run.stderr
        assert "started a proxy" not in run.stderr
    claude, codex = launcher.recorded()
    assert claude["env"]["ANTHROPIC_BASE_URL"] == running.url
    presented = claude["env"]["ANTHROPIC_AUTH_TOKEN"] == ACCESS_KEY and codex["env"]["RAWPROXY_CLIENT_KEY"] == ACCESS_KEY
    assert presented, "each client was not given the first access key"
    assert claude["status"] == 200 and codex["status"] == 200  # accepted by a proxy that wants a key
    assert claude["health"]["worker"] == str(running.process.proc.pid)
    assert answers(running.url)  # not the launcher's to stop
    assert not launcher.folder().exists() or not list(launcher.folder().iterdir())


def test_two_launchers_share_one_background_proxy(sim, tmp_path):
    launcher = Launcher(tmp_path, sim)
    release_first = tmp_path / "first-may-exit"
    first = launcher.start("claude", "first", FAKE_WAIT_FOR=str(release_first), FAKE_EXIT="3")
    try:
        assert eventually(lambda: len(launcher.recorded()) == 1, timeout=30), first.stderr
        second = launcher.run("codex", "second", FAKE_EXIT="5")
        assert second.returncode == 5, second.stderr
        one, two = launcher.recorded()
        url = one["env"]["ANTHROPIC_BASE_URL"]
        pid = int(one["health"]["worker"])
        assert two["health"]["worker"] == str(pid)  # the same proxy, not a second one
        assert "started a proxy" not in second.stderr
        assert answers(url)  # the first launcher's client still uses it
        release_first.touch()
        _, err = first.communicate(timeout=60)
        assert first.returncode == 3, err
        assert_background_proxy_stopped(launcher, url, pid)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()


def test_sigterm_reaches_the_client_and_the_proxy_is_stopped(sim, tmp_path):
    launcher = Launcher(tmp_path, sim)
    proc = launcher.start("claude", "-p", "hi", FAKE_WAIT_FOR=str(tmp_path / "never"))
    try:
        assert eventually(lambda: len(launcher.recorded()) == 1, timeout=30)
        [record] = launcher.recorded()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM, err  # the client was ended by the signal passed on
        assert gone(record["pid"])
        assert_background_proxy_stopped(launcher, record["env"]["ANTHROPIC_BASE_URL"], int(record["health"]["worker"]))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_launcher_killed_outright_does_not_keep_the_proxy_alive(sim, tmp_path):
    launcher = Launcher(tmp_path, sim)
    killed = launcher.start("claude", "first", FAKE_WAIT_FOR=str(tmp_path / "never"))
    try:
        assert eventually(lambda: len(launcher.recorded()) == 1, timeout=30), killed.stderr
        [first] = launcher.recorded()
        os.kill(killed.pid, signal.SIGKILL)  # no chance to take itself off the list
        killed.wait(10)
        os.kill(first["pid"], signal.SIGKILL)  # its client, left behind
        pid, url = int(first["health"]["worker"]), first["env"]["ANTHROPIC_BASE_URL"]
        assert answers(url)  # orphaned, still running
        # The next launcher finds the dead one on the list, drops it, and, last out, stops the proxy.
        run = launcher.run("codex", "second")
        assert run.returncode == 0, run.stderr
        assert launcher.recorded()[1]["health"]["worker"] == str(pid)
        assert_background_proxy_stopped(launcher, url, pid)
    finally:
        if killed.poll() is None:
            os.killpg(killed.pid, signal.SIGKILL)
            killed.wait()


def test_a_proxy_that_forwards_client_keys_gets_the_users_own(sim, tmp_path):
    launcher = Launcher(tmp_path, sim)
    flags = [f for f in launcher.flags if f not in ("--api-key", UPSTREAM_KEY)]  # no upstream key
    run = launcher.run("claude", "hi", flags=flags)
    assert run.returncode == 0 and "set RAWPROXY_CLIENT_KEY to your upstream key" in run.stderr
    run = launcher.run("claude", "hi", flags=flags, RAWPROXY_CLIENT_KEY="users-own-upstream-key")
    assert run.returncode == 0 and "RAWPROXY_CLIENT_KEY" not in run.stderr
    placeholder, own = launcher.recorded()
    assert placeholder["env"]["ANTHROPIC_AUTH_TOKEN"] == "rawproxy"
    forwarded = own["env"]["ANTHROPIC_AUTH_TOKEN"] == "users-own-upstream-key"
    assert forwarded, "the user's own upstream key was not given to the client"


@pytest.mark.parametrize("kind,package,variable", [("claude", "@anthropic-ai/claude-code", "CLAUDE_BIN"),
                                                   ("codex", "@openai/codex", "CODEX_BIN")])
def test_a_missing_client_says_how_to_install_it(sim, tmp_path, kind, package, variable):
    launcher = Launcher(tmp_path, sim)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    # Not on PATH and no override ...
    run = launcher.run(kind, "hi", PATH=str(empty), **{variable: ""})
    assert run.returncode == 127
    assert f"npm install -g {package}" in run.stderr and variable in run.stderr
    # ... or an override naming nothing runnable.
    run = launcher.run(kind, "hi", **{variable: str(tmp_path / "no-such-client")})
    assert run.returncode == 127 and f"npm install -g {package}" in run.stderr
    assert not launcher.folder().exists()  # no proxy was started for nothing


def test_env_prints_what_a_client_started_by_hand_needs(sim, tmp_path):
    launcher = Launcher(tmp_path, sim)
    flags = ["--port", str(launcher.port)]
    env = launcher.env("claude", PROXY_API_KEYS=f"{ACCESS_KEY},second-key", NO_PROXY="")

    def printed(target: str) -> str:
        run = subprocess.run([sys.executable, "-m", "rawproxy", *flags, "env", target], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, run.stderr
        assert ACCESS_KEY not in run.stdout  # by reference to PROXY_API_KEYS, never printed
        return run.stdout

    url = f"http://127.0.0.1:{launcher.port}"
    claude = printed("claude")
    check = subprocess.run(["bash", "-c", claude + '\n[ "$ANTHROPIC_AUTH_TOKEN" = "${PROXY_API_KEYS%%,*}" ] && '
                           'echo "$ANTHROPIC_BASE_URL $NO_PROXY ${ANTHROPIC_API_KEY-unset}"'],
                           env={**env, "ANTHROPIC_API_KEY": "sk-ant-elsewhere"}, capture_output=True, text=True)
    assert check.stdout.split() == [url, "127.0.0.1,localhost,::1", "unset"], check.stderr
    openai = printed("openai")
    check = subprocess.run(["bash", "-c", openai + '\n[ "$OPENAI_API_KEY" = "${PROXY_API_KEYS%%,*}" ] && '
                           'echo "$OPENAI_BASE_URL"'], env=env, capture_output=True, text=True)
    assert check.stdout.strip() == url + "/v1", check.stderr
    config = tomllib.loads(printed("codex"))
    assert config["model_provider"] == "rawproxy" and config["model"] == "kimi-k2.5"
    assert config["model_providers"]["rawproxy"] == {
        "name": "rawproxy", "base_url": url + "/v1", "env_key": "RAWPROXY_CLIENT_KEY", "wire_api": "responses",
        "stream_idle_timeout_ms": 600000}

    run = subprocess.run([sys.executable, "-m", "rawproxy", "env", "vim"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "env {claude,codex,openai}" in run.stderr


def test_flags_alone_still_start_a_server(sim, tmp_path):
    """A flag whose value is a command's name is a flag: `--model-map claude` serves."""
    port = free_port()
    log = open(tmp_path / "proxy.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "rawproxy", "--model-map", "claude=kimi-k2.5", "--port", str(port),
                             "--upstream", sim.base("openai"), "--api-key", UPSTREAM_KEY],
                            cwd=ROOT, env={**os.environ, **ENV_WITHOUT_PROXIES}, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert eventually(lambda: answers(f"http://127.0.0.1:{port}"), timeout=15)
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
