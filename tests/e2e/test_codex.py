"""Codex CLI itself, headless, through the proxy's Responses route to the Kimi simulator.

`make e2e` installs Codex from npm into .cache/codex (or set CODEX_BIN). Codex speaks
only the Responses API; the simulator speaks Chat Completions or Anthropic Messages, so
every turn is translated by the proxy, both ways, streamed. The simulator's scripted
agent runs `echo step-1` and then `echo step-2` through Codex's `exec_command` tool and
answers quoting both outputs: the run succeeds only if every turn reached Codex intact
and Codex's replies (with their reasoning items) reached the upstream repaired.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from ..conftest import ROOT, start_proxy
from ..integration.reasoning_checks import assert_real_reasoning_replayed

pytestmark = pytest.mark.e2e

CODEX = os.environ.get("CODEX_BIN") or os.path.join(ROOT, ".cache", "codex", "node_modules", ".bin", "codex")
TASK = "Use exec_command to run two shell commands, one after the other, then report both outputs."


def codex_config(proxy_url: str) -> str:
    return "\n".join([
        'model = "kimi-k2.5"',
        'model_provider = "rawproxy"',
        "",
        "[model_providers.rawproxy]",
        'name = "rawproxy"',
        f'base_url = "{proxy_url}/v1"',
        'env_key = "RAWPROXY_KEY"',
        'wire_api = "responses"',
        "",
    ])


@pytest.mark.parametrize("fmt", ["anthropic", "openai"])
def test_codex_finishes_a_two_command_task(simulator, fmt, tmp_path):
    if not os.path.exists(CODEX):
        pytest.fail(f"Codex CLI is not installed at {CODEX}; run `make e2e`")
    version = subprocess.run([CODEX, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    print(f"{version} on an {fmt}-format upstream")
    proxy = start_proxy(simulator, fmt, str(tmp_path / "proxy.log"))
    simulator.reset()
    home, codex_home, work = tmp_path / "home", tmp_path / "codex", tmp_path / "work"
    for folder in (home, codex_home, work):
        folder.mkdir()
    (codex_home / "config.toml").write_text(codex_config(proxy.url))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "CODEX_HOME": str(codex_home),
           "RAWPROXY_KEY": "client-key"}
    try:
        run = subprocess.run([CODEX, "exec", "--json", "--skip-git-repo-check",
                              "--dangerously-bypass-approvals-and-sandbox", TASK],
                             cwd=work, env=env, capture_output=True, text=True, timeout=240,
                             stdin=subprocess.DEVNULL)
        proxy_log = proxy.process.output()
    finally:
        proxy.process.stop()
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    print("\n".join(json.dumps(e)[:160] for e in events))
    context = (run.stdout[-3000:], run.stderr[-2000:], proxy_log[-3000:])
    assert run.returncode == 0, context
    assert not [e for e in events if e["type"] in ("turn.failed", "error")], context
    commands = [e["item"] for e in events
                if e["type"] == "item.completed" and e["item"].get("type") == "command_execution"]
    assert [c["command"].split()[-1].strip("'\"") for c in commands] == ["step-1", "step-2"], commands
    assert all("step-" in (c.get("aggregated_output") or "") for c in commands), commands
    answer = [e["item"]["text"] for e in events
              if e["type"] == "item.completed" and e["item"].get("type") == "agent_message"][-1]
    assert "step-1" in answer and "step-2" in answer, answer
    assert assert_real_reasoning_replayed(simulator) >= 2
