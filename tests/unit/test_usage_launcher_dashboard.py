"""Token usage read by the taps, the launcher's command line and client set-up, and the
dashboard's figures from metric families."""

from __future__ import annotations

import signal
import sys

import pytest

from rawproxy.core.metrics import Histogram
from rawproxy.core.settings import ModelMap, Settings
from rawproxy.core.sse import SSEParser, encode_event
from rawproxy.core.tap import AnthropicTap, OpenAITap
from rawproxy.core.usage import TokenUsage
from rawproxy.proxy.dashboard import client_label, quantile, upstream_state
from rawproxy.server.http import RequestHead
from rawproxy.service.launcher import client_command, client_env, codex_model, run_client, split_command
from rawproxy.simulator import render
from rawproxy.simulator.agent import Answer

ANSWER = Answer("thinking it over", "hello there", [])
USAGE = render.Usage(prompt=1000, completion=42, cached=512)


def _events(raw: list[bytes]):
    return SSEParser().feed(b"".join(raw))


# ------------------------------------------------------------------ token usage


def test_openai_usage_with_every_detail():
    usage = TokenUsage()
    usage.read_openai({"prompt_tokens": 1000, "completion_tokens": 300, "prompt_tokens_details": {"cached_tokens": 512},
                       "completion_tokens_details": {"reasoning_tokens": 250}})
    assert usage.reported() == {"input": 1000, "output": 300, "cached_input": 512, "reasoning": 250}


def test_kimi_reports_the_cached_part_at_the_top_level_and_no_reasoning_count():
    usage = TokenUsage()
    usage.read_openai({"prompt_tokens": 90, "completion_tokens": 10, "cached_tokens": 64})
    assert usage.reported() == {"input": 90, "output": 10, "cached_input": 64}


@pytest.mark.parametrize("odd", [None, "12", [], {"prompt_tokens": "9"}, {"prompt_tokens": True}, {"prompt_tokens": -1}])
def test_usage_of_an_odd_shape_is_left_out_never_raised(odd):
    usage = TokenUsage()
    usage.read_openai(odd)
    usage.read_anthropic(odd)
    assert usage.reported() == {}


def test_an_anthropic_stream_completes_its_usage_at_message_delta():
    usage = TokenUsage()
    usage.read_anthropic({"input_tokens": 100, "cache_read_input_tokens": 50, "cache_creation_input_tokens": 10,
                          "output_tokens": 1})
    usage.read_anthropic({"output_tokens": 42})  # Anthropic's message_delta carries only this
    assert usage.reported() == {"input": 160, "output": 42, "cached_input": 50}
    bare = TokenUsage()
    bare.read_anthropic({"input_tokens": 7, "output_tokens": 3})
    assert bare.reported() == {"input": 7, "output": 3}  # no cache figure reported: none made up


@pytest.mark.parametrize("stream", [False, True])
def test_the_anthropic_tap_reads_what_the_upstream_reported(stream):
    tap = AnthropicTap("a" * 20, "toolu")
    if stream:
        for ev in _events(render.anthropic_events(ANSWER, "kimi-k2.5", USAGE, "msg_1")):
            tap.event(ev)
    else:
        tap.message(render.anthropic_json(ANSWER, "kimi-k2.5", USAGE, "msg_1"))
    assert tap.usage.reported() == {"input": 1000, "output": 42, "cached_input": 512}


@pytest.mark.parametrize("stream,include_usage", [(False, False), (True, False), (True, True)])
def test_the_openai_tap_reads_what_the_upstream_reported(stream, include_usage):
    tap = OpenAITap("b" * 20, "call")
    if stream:
        events = _events(render.openai_events(ANSWER, "kimi-k2.5", USAGE, "c1", 0, include_usage))
        out = [tap.event(ev) for ev in events]
        assert all(o is e for o, e in zip(out, events))  # reading usage changes no byte
    else:
        tap.message(render.openai_json(ANSWER, "kimi-k2.5", USAGE, "c1", 0))
    assert tap.usage.reported() == {"input": 1000, "output": 42, "cached_input": 512}


def test_an_unreadable_usage_event_never_breaks_a_stream():
    tap = AnthropicTap("c" * 20, "toolu")
    raw = [encode_event("not json", "message_delta"), encode_event('["usage"]', "message_start")]
    assert [tap.event(ev).raw for ev in _events(raw)] == raw
    openai = OpenAITap("d" * 20, "call")
    assert openai.event(_events([encode_event('{"usage": 5, "choices": "x"}')])[0])
    assert tap.usage.reported() == {} and openai.usage.reported() == {}


# ------------------------------------------------------------------ the launcher


@pytest.mark.parametrize("argv,expected", [
    (["claude"], ([], "claude", [])),
    (["--simulator", "claude", "-p", "hi", "--port", "1"], (["--simulator"], "claude", ["-p", "hi", "--port", "1"])),
    (["--port", "9000", "--upstream=http://x/v1", "codex", "exec", "hi"],
     (["--port", "9000", "--upstream=http://x/v1"], "codex", ["exec", "hi"])),
    (["--por", "9000", "env", "openai"], (["--por", "9000"], "env", ["openai"])),  # argparse's abbreviations
    (["--model-map", "claude", "--port", "1"], None),  # a flag's value is no command
    (["--port", "8000"], None),
    ([], None),
    (["--debug", "serve"], None),  # not a command: argparse says so
])
def test_commands_are_told_apart_from_flags_and_their_values(argv, expected):
    assert split_command(argv) == expected


def test_the_client_is_given_the_proxy_and_the_users_arguments():
    settings = Settings(api_key="upstream-key")
    env = client_env("claude", "http://127.0.0.1:5", settings, {"ANTHROPIC_API_KEY": "sk-ant", "no_proxy": "a.b"})
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:5" and env["ANTHROPIC_AUTH_TOKEN"] == "rawproxy"
    assert "ANTHROPIC_API_KEY" not in env and env["NO_PROXY"] == env["no_proxy"] == "a.b,127.0.0.1,localhost,::1"
    keyed = client_env("codex", "http://127.0.0.1:5", Settings(access_keys=("k1", "k2")), {})
    assert keyed["RAWPROXY_CLIENT_KEY"] == "k1"
    # No upstream key: the proxy forwards the client's key, the user's own.
    forwarding = client_env("codex", "u", Settings(api_key=""), {"RAWPROXY_CLIENT_KEY": "sk-kimi"})
    assert forwarding["RAWPROXY_CLIENT_KEY"] == "sk-kimi"
    assert client_command("claude", "/bin/claude", ["-p", "x"], "u", settings) == ["/bin/claude", "-p", "x"]


def test_codex_is_given_the_model_the_map_names():
    assert codex_model(Settings()) == "kimi-k2.5"
    assert codex_model(Settings(model_map=ModelMap.parse("gpt-*=gpt-4o,claude-*=kimi-k2-thinking"))) == "kimi-k2-thinking"
    argv = client_command("codex", "codex", ["exec", "hi"], "http://127.0.0.1:7", Settings())
    assert argv[-2:] == ["exec", "hi"] and 'model="kimi-k2.5"' in argv


def test_a_client_ended_by_a_signal_exits_as_a_shell_reports_it():
    code = run_client([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"], {})
    assert code == 128 + signal.SIGTERM
    assert run_client([sys.executable, "-c", "raise SystemExit(9)"], {}) == 9


# ------------------------------------------------------------------ the dashboard


def test_quantiles_fall_in_the_bucket_prometheus_would_name():
    hist = Histogram("h", "help", (0.1, 0.2, 0.5, 1.0))
    for value in [0.05] * 50 + [0.15] * 40 + [0.7] * 9 + [5.0]:
        hist.observe(value)
    assert 0.0 <= quantile(hist, 0.5) <= 0.1
    assert 0.5 <= quantile(hist, 0.99) <= 1.0
    assert quantile(hist, 1.0) == 1.0  # past the last bound: that bound
    assert quantile(Histogram("e", "help"), 0.5) is None


def test_upstream_state_from_the_last_completions():
    ok = {"route": "/v1/messages", "status": 200, "upstream_status": 200, "stream": "complete"}
    bad = {"route": "/v1/messages", "status": 502, "upstream_status": None, "stream": None}
    limited = {**ok, "status": 429, "upstream_status": 429}
    refused_by_us = {"route": "/v1/messages", "status": 401, "upstream_status": None, "stream": None}
    assert upstream_state([]) == "idle"
    assert upstream_state([{"route": "/v1/models", "status": 200}]) == "idle"
    assert upstream_state([ok, refused_by_us, ok]) == "ok"
    assert upstream_state([ok, bad, ok]) == "degraded"
    assert upstream_state([bad, limited, bad, ok]) == "failing"


def test_a_client_is_labelled_without_its_key():
    key = b"sk-secret-key-123456"
    head = RequestHead("POST", "/v1/messages", "", [(b"user-agent", b"claude-cli/2.1.3 (external, cli)"),
                                                    (b"x-api-key", key)])
    label = client_label(head)
    assert label.startswith("claude-cli #") and len(label) == len("claude-cli #") + 6
    assert key.decode() not in label and "secret" not in label
    other = RequestHead("POST", "/v1/messages", "", [(b"authorization", b"Bearer another-key")])
    assert client_label(other).startswith("#") and client_label(other) != label.split(" ")[1]
    assert client_label(RequestHead("GET", "/", "", [(b"user-agent", b"\x1b[31mevil")])) == "no key"

