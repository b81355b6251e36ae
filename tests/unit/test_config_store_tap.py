"""Settings, the reasoning store and the tap, each on its own."""

from __future__ import annotations

import json

import pytest

from rawproxy.core.ids import new_turn_key, sanitize_tool_id, tool_call_id, turn_key_of
from rawproxy.core.reasoning import Reasoning
from rawproxy.core.settings import ConfigError, ModelMap, infer_format, upstream_url
from rawproxy.core.sse import SSEParser, encode_event
from rawproxy.core.tap import AnthropicTap, OpenAITap
from rawproxy.service.cli import load_settings
from rawproxy.store import MemoryReasoningStore


def test_seed_environment_names_still_work():
    s = load_settings([], {"ZENMUX_API_KEY": "sk-SECRET-42", "MOONSHOT_BASE_URL": "https://api.moonshot.ai/v1",
                           "PROXY_HOST": "0.0.0.0", "PROXY_PORT": "8080", "DEBUG": "true",
                           "PROXY_ALLOW_OPEN": "1"})  # a key on 0.0.0.0 needs access keys or this
    assert (s.api_key, s.host, s.port, s.debug, s.upstream_format) == ("sk-SECRET-42", "0.0.0.0", 8080, True, "openai")
    assert "sk-SECRET-42" not in repr(s)  # the key never shows in a repr or a log of the settings


def test_defaults_and_flags_beat_environment():
    s = load_settings([], {})
    assert s.upstream == "https://zenmux.ai/api/anthropic" and s.upstream_format == "anthropic" and s.port == 8000
    s = load_settings(["--port", "9000", "--upstream-format", "openai"], {"PROXY_PORT": "8080"})
    assert s.port == 9000 and s.upstream_format == "openai"


@pytest.mark.parametrize("env,needle", [
    ({"PROXY_PORT": "eighty"}, "PROXY_PORT"),
    ({"MOONSHOT_BASE_URL": "ftp://x"}, "http(s)"),
    ({"UPSTREAM_FORMAT": "grpc"}, "UPSTREAM_FORMAT"),
    ({"MODEL_MAP": "claude-*"}, "glob=target"),
])
def test_bad_settings_say_what_is_wrong(env, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_settings([], env)


def test_url_conventions_of_each_ecosystem():
    assert upstream_url("https://zenmux.ai/api/anthropic", "anthropic") == "https://zenmux.ai/api/anthropic/v1/messages"
    assert upstream_url("https://api.moonshot.ai/v1/", "openai") == "https://api.moonshot.ai/v1/chat/completions"
    assert infer_format("https://api.moonshot.ai/v1") == "openai"
    assert infer_format("https://api.kimi.com/coding") == "anthropic"


def test_model_map_first_match_wins_and_kimi_pattern():
    m = ModelMap.parse("claude-haiku-*=kimi-k2.6, claude-*=kimi-k2.5")
    assert m.map("claude-haiku-4-5") == "kimi-k2.6" and m.map("claude-opus-5") == "kimi-k2.5" and m.map("x") == "x"
    s = load_settings([], {})
    assert s.is_kimi("Pro/moonshotai/Kimi-K2.5") and s.is_kimi("k2p5") and not s.is_kimi("gpt-4o")


def test_ids_are_valid_unique_and_carry_their_turn():
    a, b = new_turn_key(), new_turn_key()
    assert a != b
    cid = tool_call_id(a, 3, "toolu")
    assert turn_key_of(cid) == a and turn_key_of("functions.Bash:0") is None
    assert sanitize_tool_id("functions.Bash:0") == sanitize_tool_id("functions.Bash:0")
    assert sanitize_tool_id("functions.Bash:0") != sanitize_tool_id("functions.Bash:1")
    import re
    assert re.fullmatch(r"[a-zA-Z0-9_-]+", sanitize_tool_id("functions.Bash:0"))


async def test_store_bounded_in_bytes_evicts_least_recent():
    store = MemoryReasoningStore(max_bytes=1000, ttl=60)
    for i in range(20):
        await store.put(f"k{i}", Reasoning("x" * 100))
    assert store.bytes <= 1000 and len(store) < 20
    assert await store.get_many(["k19"]) == {"k19": Reasoning("x" * 100)}
    assert await store.get_many(["k0"]) == {}


async def test_store_entries_expire():
    now = [0.0]
    store = MemoryReasoningStore(max_bytes=10_000, ttl=10, clock=lambda: now[0])
    await store.put("k", Reasoning("t"))
    now[0] = 11
    assert await store.get_many(["k"]) == {} and store.bytes == 0


def test_anthropic_tap_rewrites_ids_and_keeps_other_events_byte_identical():
    key = "b" * 20
    tap = AnthropicTap(key, "toolu")
    raw = [
        encode_event(json.dumps({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}), "content_block_start"),
        encode_event(json.dumps({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "deep "}}), "content_block_delta"),
        encode_event(json.dumps({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "SIG"}}), "content_block_delta"),
        encode_event(json.dumps({"type": "content_block_stop", "index": 0}), "content_block_stop"),
        encode_event(json.dumps({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "functions.Bash:0", "name": "Bash", "input": {}}}), "content_block_start"),
    ]
    events = SSEParser().feed(b"".join(raw))
    out = [tap.event(e) for e in events]
    assert [o.raw for o in out[:4]] == raw[:4]
    assert json.loads(out[4].data)["content_block"]["id"] == tool_call_id(key, 0, "toolu")
    assert tap.remembered() == Reasoning("deep ", "SIG")


def test_openai_tap_rewrites_each_call_id_once_and_remembers_reasoning():
    key = "c" * 20
    tap = OpenAITap(key, "call")
    chunks = [
        {"choices": [{"index": 0, "delta": {"reasoning_content": "think"}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "functions.a:0", "function": {"name": "a", "arguments": ""}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "id": "functions.b:1", "function": {"name": "b", "arguments": "{}"}}]}}]},
    ]
    events = SSEParser().feed(b"".join(encode_event(json.dumps(c)) for c in chunks) + b"data: [DONE]\n\n")
    out = [tap.event(e) for e in events]
    assert out[2] is events[2] and out[4] is events[4]  # untouched chunks pass as they came
    ids = [json.loads(out[i].data)["choices"][0]["delta"]["tool_calls"][0]["id"] for i in (1, 3)]
    assert ids == [tool_call_id(key, 0, "call"), tool_call_id(key, 1, "call")]
    assert tap.tool_calls == 2 and tap.remembered() == Reasoning("think", None)


def test_tap_remembers_nothing_for_answers_without_tool_calls():
    tap = OpenAITap("d" * 20, "call")
    tap.message({"choices": [{"index": 0, "message": {"reasoning_content": "r", "content": "hi"}}]})
    assert tap.remembered() is None


def test_the_sealing_secret_comes_from_the_flag_or_environment_and_must_be_long_enough():
    assert load_settings([], env={"PROXY_SECRET": "s" * 16}).secret == "s" * 16
    assert load_settings(["--secret", "f" * 20], env={"PROXY_SECRET": "s" * 16}).secret == "f" * 20
    assert load_settings([], env={}).secret == ""  # a random one is made at start-up
    with pytest.raises(ConfigError, match="at least 16"):
        load_settings([], env={"PROXY_SECRET": "short"})
    assert "s" * 16 not in repr(load_settings([], env={"PROXY_SECRET": "s" * 16}))
