"""Claude Code itself, headless, through the proxy to the Kimi simulator (`make e2e`).

Claude Code is installed from npm by `make e2e` into .cache/claude-code (or set
CLAUDE_BIN). It runs a two-step Bash task; the simulator's scripted agent calls Bash
twice and then answers quoting both outputs, so the run only succeeds if every turn,
streamed, repaired and (on the OpenAI-format upstream) translated, reached Claude Code intact.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from ..conftest import ROOT, start_proxy
from ..integration.reasoning_checks import assert_real_reasoning_replayed

pytestmark = pytest.mark.e2e

CLAUDE = os.environ.get("CLAUDE_BIN") or os.path.join(ROOT, ".cache", "claude-code", "node_modules", ".bin", "claude")
TASK = "Use the Bash tool to run two commands, one after the other, then report both outputs."


def claude_version() -> str:
    out = subprocess.run([CLAUDE, "--version"], capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


@pytest.mark.parametrize("fmt", ["anthropic", "openai"])
def test_claude_code_finishes_a_bash_tool_loop(simulator, fmt, tmp_path):
    if not os.path.exists(CLAUDE):
        pytest.fail(f"Claude Code is not installed at {CLAUDE}; run `make e2e`")
    print(f"Claude Code {claude_version()} on an {fmt}-format upstream")
    proxy = start_proxy(simulator, fmt, str(tmp_path / "proxy.log"))
    simulator.reset()
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": proxy.url,
        "ANTHROPIC_API_KEY": "client-key",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "IS_SANDBOX": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    try:
        run = subprocess.run([CLAUDE, "-p", TASK, "--output-format", "json", "--allowedTools", "Bash"],
                             cwd=work, env=env, capture_output=True, text=True, timeout=240)
    finally:
        proxy.process.stop()
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-2000:], proxy.process.output()[-3000:])
    result = json.loads(run.stdout)
    assert result.get("is_error") is False, result
    # The simulator's Bash commands are `echo step-1` and `echo step-2`; Claude Code ran
    # them, sent the outputs back, and the final answer quotes them.
    assert "step-1" in result["result"] and "step-2" in result["result"], result["result"]
    bash_turns = [t for t in simulator.turns() if any(c["name"] == "Bash" for c in t["tool_calls"])]
    assert len(bash_turns) == 2
    assert_real_reasoning_replayed(simulator)
