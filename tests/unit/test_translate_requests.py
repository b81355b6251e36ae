"""Request translation: one test per docs/protocols.md section 3 table row, both directions,
round trips, the Claude Code fixtures, and what must be refused (ClientError)."""

from __future__ import annotations

import copy
import json
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawproxy.core.errors import ClientError
from rawproxy.core.ids import is_proxy_signature, make_signature, sanitize_tool_id, tool_call_id
from rawproxy.translate import anthropic_to_openai_request, openai_to_anthropic_request
from tests.unit.translate_strategies import TURN, texts, tool_inputs, tool_names

from ..conftest import CLAUDE_CODE_FIXTURES

FIXTURES = CLAUDE_CODE_FIXTURES


def a2o(**body):
    return anthropic_to_openai_request({"model": "m", "max_tokens": 100, **body})


def o2a(**body):
    return openai_to_anthropic_request({"model": "m", **body})


USER = {"role": "user", "content": "hi"}

# ---------------------------------------------------------------- Anthropic -> OpenAI, row by row


def test_system_string_and_blocks_become_first_system_message():
    assert a2o(system="be brief", messages=[USER])["messages"][0] == {"role": "system", "content": "be brief"}
    blocks = [{"type": "text", "text": "one"}, {"type": "text", "text": "two", "cache_control": {"type": "ephemeral"}}]
    assert a2o(system=blocks, messages=[USER])["messages"] == [{"role": "system", "content": "one\n\ntwo"}, USER]


@pytest.mark.parametrize("content", ["env info", [{"type": "text", "text": "env info"}]])
def test_system_role_inside_messages_stays_in_place(content):
    out = a2o(system="top", messages=[USER, {"role": "system", "content": content}, {"role": "user", "content": "more"}])
    assert out["messages"] == [{"role": "system", "content": "top"}, USER, {"role": "system", "content": "env info"},
                               {"role": "user", "content": "more"}]


def test_user_text_and_images_become_parts():
    msg = {"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "QUJD"}},
        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
        {"type": "text", "text": ""},  # never forwarded: empty text
    ]}
    assert a2o(messages=[msg])["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD"}},
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
    ]}]


def test_tool_results_become_tool_messages_before_the_users_text():
    msg = {"role": "user", "content": [
        {"type": "text", "text": "and also this"},
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "out 1"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"type": "tool_result", "tool_use_id": "toolu_3", "content": "boom", "is_error": True},
    ]}
    assert a2o(messages=[msg])["messages"] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "out 1"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "a\n\nb"},
        {"role": "tool", "tool_call_id": "toolu_3", "content": "[tool error] boom"},
        {"role": "user", "content": [{"type": "text", "text": "and also this"}]},
    ]


def test_unknown_tool_result_blocks_are_flattened_not_dropped():
    msg = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
        {"type": "tool_reference", "tool_name": "WebFetch"},
        {"type": "search_result", "title": "T", "source": "s"},
    ]}]}
    text = a2o(messages=[msg])["messages"][0]["content"]
    assert "WebFetch" in text and "search_result" in text and '"title": "T"' in text


def test_tool_result_images_follow_as_user_parts():
    img = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}}
    out = a2o(messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [img]}]}])["messages"]
    assert out[0]["role"] == "tool" and out[1] == {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}}]}


def test_invalid_tool_ids_sanitised_the_same_on_both_sides_of_a_pair():
    kimi_id = "functions.Bash:0"
    out = a2o(messages=[USER,
                        {"role": "assistant", "content": [{"type": "tool_use", "id": kimi_id, "name": "Bash", "input": {}}]},
                        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": kimi_id, "content": "ok"}]}])["messages"]
    assert out[1]["tool_calls"][0]["id"] == out[2]["tool_call_id"] == sanitize_tool_id(kimi_id)
    valid = tool_call_id(TURN, 0, "toolu")
    out = a2o(messages=[{"role": "assistant", "content": [{"type": "tool_use", "id": valid, "name": "Bash", "input": {}}]}])
    assert out["messages"][0]["tool_calls"][0]["id"] == valid  # valid ids unchanged


def test_assistant_thinking_text_and_tool_use():
    msg = {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "step 1", "signature": "s1"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "Running it."},
        {"type": "thinking", "thinking": "step 2", "signature": "s2"},
        {"type": "tool_use", "id": "toolu_a", "name": "Bash", "input": {"command": "ls", "ü": [1, None]}},
    ]}
    out = a2o(messages=[USER, msg])["messages"][1]
    assert out == {"role": "assistant", "content": "Running it.", "reasoning_content": "step 1\n\nstep 2", "tool_calls": [
        {"id": "toolu_a", "type": "function", "function": {"name": "Bash", "arguments": json.dumps({"command": "ls", "ü": [1, None]}, ensure_ascii=False)}}]}
    assert json.loads(out["tool_calls"][0]["function"]["arguments"]) == {"command": "ls", "ü": [1, None]}


def test_assistant_empty_text_omitted_next_to_tool_calls():
    msg = {"role": "assistant", "content": [{"type": "text", "text": ""}, {"type": "tool_use", "id": "t", "name": "X", "input": {}}]}
    out = a2o(messages=[USER, msg])["messages"][1]
    assert "content" not in out and out["tool_calls"][0]["function"]["arguments"] == "{}"


def test_tools_become_functions_without_anthropic_only_keys():
    tools = [{"name": "Bash", "description": "run", "input_schema": {"type": "object", "properties": {"c": {"type": "string"}}},
              "cache_control": {"type": "ephemeral"}},
             {"name": "Later", "description": "deferred", "input_schema": {"type": "object"}, "defer_loading": True}]
    assert a2o(messages=[USER], tools=tools)["tools"] == [
        {"type": "function", "function": {"name": "Bash", "description": "run", "parameters": {"type": "object", "properties": {"c": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "Later", "description": "deferred", "parameters": {"type": "object"}}},
    ]


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, {"tool_choice": "auto"}),
    ({"type": "any"}, {"tool_choice": "required"}),
    ({"type": "none"}, {"tool_choice": "none"}),
    ({"type": "tool", "name": "Bash"}, {"tool_choice": {"type": "function", "function": {"name": "Bash"}}}),
    ({"type": "auto", "disable_parallel_tool_use": True}, {"tool_choice": "auto", "parallel_tool_calls": False}),
])
def test_tool_choice(choice, expected):
    out = a2o(messages=[USER], tool_choice=choice)
    assert {k: out[k] for k in expected} == expected
    if "parallel_tool_calls" not in expected:
        assert "parallel_tool_calls" not in out


@pytest.mark.parametrize(("thinking", "expected"), [
    ({"type": "enabled", "budget_tokens": 4096}, {"type": "enabled"}),
    ({"type": "adaptive", "display": "omitted"}, {"type": "enabled"}),
    ({"type": "adaptive", "budget_tokens": 0}, {"type": "enabled"}),
    ({"type": "disabled"}, {"type": "disabled"}),
])
def test_thinking_switch(thinking, expected):
    assert a2o(messages=[USER], thinking=thinking)["thinking"] == expected


def test_scalars_stop_max_tokens_user_temperature_and_stream():
    out = a2o(messages=[USER], stop_sequences=["END", "###"], metadata={"user_id": "u-1"}, temperature=0.3, top_p=0.9, stream=True)
    assert out["stop"] == ["END", "###"] and out["max_tokens"] == 100 and out["user"] == "u-1"
    assert out["temperature"] == 0.3 and out["top_p"] == 0.9
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}
    assert "stream" not in a2o(messages=[USER], stream=False)


def test_anthropic_only_tuning_fields_dropped():
    out = a2o(messages=[USER], context_management={"edits": []}, output_config={"effort": "high"},
              cache_control={"type": "ephemeral"}, top_k=5)
    assert set(out) == {"model", "messages", "max_tokens"}


def test_structured_output_kept_as_response_format():
    out = a2o(messages=[USER], output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}})
    assert out["response_format"]["json_schema"]["schema"] == {"type": "object"}


@pytest.mark.parametrize(("body", "needle"), [
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "server tool"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
    ({"messages": [{"role": "assistant", "content": [{"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}]}]}, "server_tool_use"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}, "file"),
    ({"system": [{"type": "image"}]}, "system"),
])
def test_anthropic_requests_that_cannot_be_expressed(body, needle):
    with pytest.raises(ClientError, match=needle) as info:
        anthropic_to_openai_request({"model": "m", "max_tokens": 1, "messages": [USER], **body})
    assert info.value.status == 400


# ---------------------------------------------------------------- Claude Code fixtures


@pytest.mark.parametrize("name", ["2.1.331-first-turn.json", "2.1.331-after-tool-use.json"])
def test_claude_code_fixtures_translate_to_valid_openai(name):
    body = json.loads((FIXTURES / name).read_text())
    original = copy.deepcopy(body)
    out = anthropic_to_openai_request(body)
    assert body == original, "the input is not mutated"
    msgs = out["messages"]
    assert msgs[0]["role"] == "system" and "Claude Agent SDK" in msgs[0]["content"]
    # the system message Claude Code puts inside `messages` stays in place (after the user)
    roles = [m["role"] for m in msgs]
    assert roles[:3] == ["system", "user", "system"]
    assert out["thinking"] == {"type": "enabled"} and out["stream_options"] == {"include_usage": True}
    assert out["max_tokens"] == 128000 and out["user"] == original["metadata"]["user_id"]
    assert {"context_management", "output_config", "system", "metadata"}.isdisjoint(out)
    assert [t["function"]["name"] for t in out["tools"]] == [t["name"] for t in original["tools"]]
    assert all(set(t) == {"type", "function"} and set(t["function"]) <= {"name", "description", "parameters"} for t in out["tools"])
    for m in msgs:
        assert m["role"] in ("system", "user", "assistant", "tool")
        if m["role"] == "assistant":
            assert m["tool_calls"] and "content" not in m  # no empty content next to tool calls
            assert m["reasoning_content"] == "I should run echo hello."
            assert json.loads(m["tool_calls"][0]["function"]["arguments"]) == {"command": "echo hello", "description": "Print hello"}
    if name.endswith("after-tool-use.json"):
        i = roles.index("assistant")
        assert msgs[i + 1] == {"role": "tool", "tool_call_id": "toolu_8b36e792097d4dd19542", "content": "hello"}
    json.dumps(out)  # serialisable as is


# ---------------------------------------------------------------- OpenAI -> Anthropic, row by row


def test_leading_system_and_developer_become_top_level_system_later_ones_stay_in_place():
    out = o2a(messages=[{"role": "system", "content": "a"}, {"role": "developer", "content": [{"type": "text", "text": "b"}]},
                        USER, {"role": "system", "content": "late"}])
    assert out["system"] == "a\n\nb"
    assert out["messages"] == [USER, {"role": "system", "content": "late"}]


def test_consecutive_tool_messages_merge_into_one_user_turn_with_following_text():
    calls = [{"id": f"call_{i}", "type": "function", "function": {"name": "Read", "arguments": "{}"}} for i in range(2)]
    out = o2a(messages=[USER, {"role": "assistant", "content": None, "tool_calls": calls},
                        {"role": "tool", "tool_call_id": "call_0", "content": "r0"},
                        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "r1"}]},
                        {"role": "user", "content": "thanks"}])
    assert out["messages"][1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "call_0", "name": "Read", "input": {}},
        {"type": "tool_use", "id": "call_1", "name": "Read", "input": {}}]}
    assert out["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "call_0", "content": "r0"},
        {"type": "tool_result", "tool_use_id": "call_1", "content": "r1"},
        {"type": "text", "text": "thanks"}]}
    assert len(out["messages"]) == 3


def test_tool_messages_at_the_end_form_their_own_user_turn():
    out = o2a(messages=[USER, {"role": "assistant", "tool_calls": [{"id": "functions.Bash:0", "type": "function",
                                                                   "function": {"name": "Bash", "arguments": '{"c": 1}'}}]},
                        {"role": "tool", "tool_call_id": "functions.Bash:0", "content": "[tool error] nope"}])
    sid = sanitize_tool_id("functions.Bash:0")
    assert out["messages"][1]["content"][0]["id"] == sid
    assert out["messages"][2] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": sid, "content": "nope", "is_error": True}]}


def test_content_parts_text_and_images():
    out = o2a(messages=[{"role": "user", "content": [
        {"type": "text", "text": "see"},
        {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklG"}},
        {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "high"}},
    ]}])
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "see"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": "UklG"}},
        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
    ]


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_becomes_leading_thinking_block_signed_for_the_turn(field):
    call_id = tool_call_id(TURN, 0, "call")
    msg = {"role": "assistant", "content": "ok", field: "I think", "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": "Bash", "arguments": '{"a": 1}'}}]}
    blocks = o2a(messages=[USER, msg])["messages"][1]["content"]
    assert blocks == [{"type": "thinking", "thinking": "I think", "signature": make_signature(TURN)},
                      {"type": "text", "text": "ok"},
                      {"type": "tool_use", "id": call_id, "name": "Bash", "input": {"a": 1}}]


def test_reasoning_without_proxy_ids_still_gets_a_proxy_signature():
    blocks = o2a(messages=[USER, {"role": "assistant", "content": "x", "reasoning_content": "r"}])["messages"][1]["content"]
    assert blocks[0]["type"] == "thinking" and is_proxy_signature(blocks[0]["signature"])


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"}),
    ({"type": "function", "function": {"name": "Bash"}}, {"type": "tool", "name": "Bash"}),
])
def test_openai_tool_choice(choice, expected):
    assert o2a(messages=[USER], tool_choice=choice)["tool_choice"] == expected


def test_parallel_tool_calls_false():
    assert o2a(messages=[USER], parallel_tool_calls=False)["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert o2a(messages=[USER], tool_choice="required", parallel_tool_calls=False)["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert "tool_choice" not in o2a(messages=[USER], parallel_tool_calls=True)


def test_openai_tools_become_input_schema():
    tools = [{"type": "function", "function": {"name": "Bash", "description": "d", "parameters": {"type": "object"}}},
             {"type": "function", "function": {"name": "NoArgs"}}]
    assert o2a(messages=[USER], tools=tools)["tools"] == [
        {"name": "Bash", "description": "d", "input_schema": {"type": "object"}},
        {"name": "NoArgs", "input_schema": {"type": "object", "properties": {}}},
    ]


def test_openai_scalars():
    assert o2a(messages=[USER])["max_tokens"] == 32768  # Anthropic requires it
    assert o2a(messages=[USER], max_tokens=10)["max_tokens"] == 10
    assert o2a(messages=[USER], max_completion_tokens=20, max_tokens=10)["max_tokens"] == 20
    assert o2a(messages=[USER], stop="END")["stop_sequences"] == ["END"]
    assert o2a(messages=[USER], stop=["a", "b"])["stop_sequences"] == ["a", "b"]
    assert o2a(messages=[USER], user="u")["metadata"] == {"user_id": "u"}
    out = o2a(messages=[USER], stream=True, stream_options={"include_usage": True}, temperature=1.0, top_p=0.5)
    assert out["stream"] is True and "stream_options" not in out and out["temperature"] == 1.0 and out["top_p"] == 0.5


def test_openai_thinking_and_reasoning_effort():
    assert o2a(messages=[USER], thinking={"type": "enabled", "budget_tokens": 2048})["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert o2a(messages=[USER], reasoning_effort="none")["thinking"] == {"type": "disabled"}
    assert o2a(messages=[USER], reasoning_effort="high")["output_config"] == {"effort": "high"}


@pytest.mark.parametrize(("body", "needle"), [
    ({"n": 2}, "n > 1"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, "json_schema"),
    ({"response_format": {"type": "json_object"}}, "json_object"),
    ({"logprobs": True}, "logprobs"),
    ({"messages": [USER, {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "B", "arguments": "{nope"}}]}]},
     r"messages\[1\].*not valid JSON"),
    ({"messages": [USER, {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "B", "arguments": "[1]"}}]}]},
     r"messages\[1\].*JSON object"),
    ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "role"),
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tool type"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, "input_audio"),
])
def test_openai_requests_that_cannot_be_expressed(body, needle):
    with pytest.raises(ClientError, match=needle):
        openai_to_anthropic_request({"model": "m", "messages": [USER], **body})


def test_response_format_text_is_fine_and_n_1_is_fine():
    out = o2a(messages=[USER], response_format={"type": "text"}, n=1)
    assert "response_format" not in out and "n" not in out


def test_assistant_with_nothing_in_it_is_left_out_and_empty_args_are_an_empty_object():
    out = o2a(messages=[USER, {"role": "assistant", "content": None}, {"role": "user", "content": "again"}])
    assert [m["role"] for m in out["messages"]] == ["user", "user"]
    out = o2a(messages=[USER, {"role": "assistant", "content": "", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "N", "arguments": ""}}]}])
    assert out["messages"][1]["content"] == [{"type": "tool_use", "id": "c", "name": "N", "input": {}}]


# ---------------------------------------------------------------- round trips


def canonical_anthropic(body: dict) -> dict:
    """Meaning of an Anthropic request: string content as one text block, system joined,
    signatures and cache hints dropped (the proxy re-signs; they are not meaning)."""
    def blocks(content):
        if isinstance(content, str):
            return [{"type": "text", "text": content}] if content else []
        out = []
        for b in content:
            b = {k: v for k, v in b.items() if k not in ("signature", "cache_control")}
            if b.get("type") == "tool_result" and isinstance(b.get("content"), list):
                b["content"] = "\n\n".join(x["text"] for x in b["content"])
            if b.get("type") == "tool_result" and not b.get("is_error"):
                b.pop("is_error", None)
            if b.get("type") == "tool_result" and not b.get("content"):
                b.pop("content", None)
            out.append(b)
        return out
    system = body.get("system")
    if isinstance(system, list):
        system = "\n\n".join(b["text"] for b in system)
    return {**{k: v for k, v in body.items() if k not in ("system", "messages")},
            "system": system or None,
            "messages": [{"role": m["role"], "content": blocks(m["content"])} for m in body["messages"]]}


@st.composite
def anthropic_conversations(draw):
    """Conversations in the shape Anthropic clients send: user, then assistant turns with
    thinking, one text and tool uses, answered by tool results and maybe text."""
    nonempty = texts.filter(bool)
    msgs = [{"role": "user", "content": draw(nonempty)}]
    for turn in range(draw(st.integers(0, 3))):
        content = []
        if draw(st.booleans()):
            content.append({"type": "thinking", "thinking": draw(nonempty), "signature": "sig"})
        if draw(st.booleans()):
            content.append({"type": "text", "text": draw(nonempty)})
        ids = [draw(st.sampled_from([tool_call_id(TURN, k, "toolu"), f"functions.X:{turn}{k}", f"toolu_{turn}{k}"])) for k in range(draw(st.integers(0, 2)))]
        ids = list(dict.fromkeys(ids))
        content += [{"type": "tool_use", "id": i, "name": draw(tool_names), "input": draw(tool_inputs)} for i in ids]
        if not content:
            content.append({"type": "text", "text": "ok"})
        msgs.append({"role": "assistant", "content": content})
        user = [{"type": "tool_result", "tool_use_id": i, "content": draw(texts), "is_error": draw(st.booleans())} for i in ids]
        if draw(st.booleans()) or not user:
            user.append({"type": "text", "text": draw(nonempty)})
        msgs.append({"role": "user", "content": user})
    return {"model": "m", "max_tokens": draw(st.integers(1, 100_000)), "messages": msgs,
            "system": draw(st.none() | texts.filter(bool)),
            "stop_sequences": draw(st.lists(st.sampled_from(["END", "###"]), min_size=1, max_size=2, unique=True)),
            "stream": draw(st.booleans()) or None, "temperature": draw(st.none() | st.floats(0, 1))}


def strip_empty(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


@settings(max_examples=200, deadline=None)
@given(anthropic_conversations())
def test_anthropic_openai_anthropic_round_trip_preserves_meaning(body):
    sanitized = json.loads(json.dumps(body))
    for m in sanitized["messages"]:  # invalid ids come back sanitised, on both sides of a pair
        for b in m["content"] if isinstance(m["content"], list) else []:
            for key in ("id", "tool_use_id"):
                if key in b:
                    b[key] = sanitize_tool_id(b[key])
    back = openai_to_anthropic_request(anthropic_to_openai_request(strip_empty(body)))
    assert strip_empty(canonical_anthropic(back)) == strip_empty(canonical_anthropic(strip_empty(sanitized)))


def test_openai_anthropic_openai_round_trip():
    body = {"model": "m", "max_tokens": 50, "stop": ["x"], "user": "u", "tool_choice": "required", "parallel_tool_calls": False,
            "tools": [{"type": "function", "function": {"name": "Bash", "description": "d", "parameters": {"type": "object"}}}],
            "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "running", "reasoning_content": "plan",
                 "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": '{"c": "ls"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "files"},
                {"role": "system", "content": "mid"},
                {"role": "user", "content": "next"},
            ]}
    back = anthropic_to_openai_request(openai_to_anthropic_request(body))
    assert back["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "running", "reasoning_content": "plan",
         "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": '{"c": "ls"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "files"},
        {"role": "system", "content": "mid"},
        {"role": "user", "content": "next"},
    ]
    assert {k: back[k] for k in ("max_tokens", "stop", "user", "tool_choice", "parallel_tool_calls", "tools")} == {
        k: body[k] for k in ("max_tokens", "stop", "user", "tool_choice", "parallel_tool_calls", "tools")}
