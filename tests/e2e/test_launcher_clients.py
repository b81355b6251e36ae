"""`rawproxy claude -p ...` and `rawproxy codex exec ...`, the real clients (`make e2e`),
through a proxy the launcher starts in the background against the Kimi simulator and
stops when the client is done. No configuration is written for either client: what they
need comes from the launcher alone."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from ..conftest import UPSTREAM_KEY, free_port
from ..integration.reasoning_checks import assert_real_reasoning_replayed
from .test_claude_code import CLAUDE
from .test_claude_code import TASK as CLAUDE_TASK
from .test_codex import CODEX
from .test_codex import TASK as CODEX_TASK

pytestmark = pytest.mark.e2e


def launch(simulator, fmt: str, tmp_path: Path, command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    home, work, state = tmp_path / "home", tmp_path / "work", tmp_path / "state"
    for folder in (home, work):
        folder.mkdir()
    flags = ["--upstream", simulator.base(fmt), "--upstream-format", fmt, "--api-key", UPSTREAM_KEY,
             "--port", str(free_port())]  # nothing listens at the configured address: one is started
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "XDG_STATE_HOME": str(state), **env}
    return subprocess.run([sys.executable, "-m", "rawproxy", *flags, *command], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def assert_started_and_stopped(run: subprocess.CompletedProcess, tmp_path: Path, route: str) -> None:
    found = re.search(r"started a proxy on (http://127\.0\.0\.1:\d+) \(log: ([^)]+)\)", run.stderr)
    assert found, run.stderr[-2000:]
    url, log = found.group(1), Path(found.group(2))
    assert log.parent == tmp_path / "state" / "rawproxy"
    text = log.read_text()
    assert f"POST {route} 200" in text and "draining" in text, text[-3000:]  # served, then stopped by SIGTERM
    with pytest.raises(OSError):
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url + "/health", timeout=2)
    assert not list(log.parent.glob("launcher-*.json"))


def test_rawproxy_claude_runs_claude_code_through_a_proxy_it_starts(simulator, tmp_path):
    if not os.path.exists(CLAUDE):
        pytest.fail(f"Claude Code is not installed at {CLAUDE}; run `make e2e`")
    simulator.reset()
    run = launch(simulator, "anthropic", tmp_path,
                 ["claude", "-p", CLAUDE_TASK, "--output-format", "json", "--allowedTools", "Bash"],
                 {"CLAUDE_BIN": CLAUDE, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "IS_SANDBOX": "1",
                  "DISABLE_AUTOUPDATER": "1"})
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-2000:])
    result = json.loads(run.stdout)
    assert result.get("is_error") is False, result
    assert "step-1" in result["result"] and "step-2" in result["result"], result["result"]
    assert len([t for t in simulator.turns() if any(c["name"] == "Bash" for c in t["tool_calls"])]) == 2
    assert_real_reasoning_replayed(simulator)
    assert_started_and_stopped(run, tmp_path, "/v1/messages")


def test_rawproxy_codex_runs_codex_through_a_proxy_it_starts(simulator, tmp_path):
    if not os.path.exists(CODEX):
        pytest.fail(f"Codex CLI is not installed at {CODEX}; run `make e2e`")
    simulator.reset()
    codex_home = tmp_path / "codex"
    codex_home.mkdir()  # empty: no config.toml, the provider comes from the launcher's -c options
    run = launch(simulator, "openai", tmp_path,
                 ["codex", "exec", "--json", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox",
                  CODEX_TASK], {"CODEX_BIN": CODEX, "CODEX_HOME": str(codex_home)})
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    context = (run.stdout[-3000:], run.stderr[-3000:])
    assert run.returncode == 0, context
    assert not [e for e in events if e["type"] in ("turn.failed", "error")], context
    commands = [e["item"] for e in events
                if e["type"] == "item.completed" and e["item"].get("type") == "command_execution"]
    assert [c["command"].split()[-1].strip("'\"") for c in commands] == ["step-1", "step-2"], commands
    answer = [e["item"]["text"] for e in events
              if e["type"] == "item.completed" and e["item"].get("type") == "agent_message"][-1]
    assert "step-1" in answer and "step-2" in answer, answer
    assert assert_real_reasoning_replayed(simulator) >= 2
    assert_started_and_stopped(run, tmp_path, "/v1/responses")
