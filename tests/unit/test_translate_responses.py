"""Non-streaming response translation (docs/protocols.md section 3, "Finish and usage")."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest
from hypothesis import given, settings

from rawproxy.core.errors import ClientError
from rawproxy.core.ids import make_signature, sanitize_tool_id, tool_call_id
from rawproxy.translate import anthropic_to_openai_response, openai_to_anthropic_response
from tests.unit.translate_strategies import TURN, answers, anthropic_answers, anthropic_body, openai_body


def kimi_body(message: dict, finish: str = "stop", usage: dict | None = None, **choice) -> dict:
    return {"id": "cmpl-abc", "object": "chat.completion", "created": 1, "model": "kimi-k2.6",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish, **choice}],
            "usage": usage or {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120, "cached_tokens": 60}}


def test_openai_answer_becomes_thinking_text_tool_use_in_that_order():
    body = kimi_body({"content": "Let me look.", "reasoning_content": "need ls", "tool_calls": [
        {"id": "functions.Bash:0", "type": "function", "function": {"name": "Bash", "arguments": '{"command": "ls"}'}},
        {"id": tool_call_id(TURN, 1, "toolu"), "type": "function", "function": {"name": "Read", "arguments": ""}},
    ]}, finish="tool_calls")
    out = openai_to_anthropic_response(body, TURN)
    assert out["id"].startswith("msg_") and out["type"] == "message" and out["role"] == "assistant"
    assert out["content"] == [
        {"type": "thinking", "thinking": "need ls", "signature": make_signature(TURN)},
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": sanitize_tool_id("functions.Bash:0"), "name": "Bash", "input": {"command": "ls"}},
        {"type": "tool_use", "id": tool_call_id(TURN, 1, "toolu"), "name": "Read", "input": {}},
    ]
    assert out["stop_reason"] == "tool_use" and out["stop_sequence"] is None
    anthropic.types.Message.model_validate(out)


def test_vllm_reasoning_field_and_no_empty_text_block():
    out = openai_to_anthropic_response(kimi_body({"content": "", "reasoning": "hmm"}), None)
    assert [b["type"] for b in out["content"]] == ["thinking"]
    assert out["content"][0]["signature"].startswith("rawproxy-sig-")


@pytest.mark.parametrize(("finish", "stop"), [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"),
                                              ("content_filter", "refusal"), (None, "end_turn")])
def test_finish_reason_to_stop_reason(finish, stop):
    assert openai_to_anthropic_response(kimi_body({"content": "x"}, finish))["stop_reason"] == stop


def test_stop_sequence_only_when_known():
    out = openai_to_anthropic_response(kimi_body({"content": "x"}, "stop", stop_reason="END"))
    assert (out["stop_reason"], out["stop_sequence"]) == ("stop_sequence", "END")


@pytest.mark.parametrize("usage", [
    {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120, "cached_tokens": 60},
    {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120, "prompt_tokens_details": {"cached_tokens": 60}},
])
def test_usage_cached_tokens_either_place(usage):
    assert openai_to_anthropic_response(kimi_body({"content": "x"}, usage=usage))["usage"] == {
        "input_tokens": 40, "output_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 60}


def test_upstream_invalid_arguments_are_a_gateway_error_not_an_empty_input():
    body = kimi_body({"tool_calls": [{"id": "c", "type": "function", "function": {"name": "B", "arguments": "{broken"}}]}, "tool_calls")
    with pytest.raises(ClientError) as info:
        openai_to_anthropic_response(body)
    assert info.value.status == 502


def test_anthropic_answer_becomes_openai_message():
    body = {"id": "msg_01", "type": "message", "role": "assistant", "model": "k", "stop_reason": "tool_use", "stop_sequence": None,
            "content": [{"type": "thinking", "thinking": "plan", "signature": "s"}, {"type": "redacted_thinking", "data": "x"},
                        {"type": "text", "text": "ok"}, {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"c": "ls"}}],
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 7}}
    out = anthropic_to_openai_response(body)
    assert out["id"].startswith("chatcmpl-") and out["object"] == "chat.completion" and isinstance(out["created"], int)
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "ok", "reasoning_content": "plan", "tool_calls": [
        {"id": "toolu_1", "type": "function", "function": {"name": "Bash", "arguments": '{"c": "ls"}'}}]}
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert out["usage"] == {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25, "prompt_tokens_details": {"cached_tokens": 7}}
    openai.types.chat.ChatCompletion.model_validate(out)


@pytest.mark.parametrize(("stop", "finish"), [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
                                              ("tool_use", "tool_calls"), ("pause_turn", "stop"), ("refusal", "content_filter"),
                                              ("model_context_window_exceeded", "length")])
def test_stop_reason_to_finish_reason(stop, finish):
    body = {"id": "msg_1", "model": "k", "content": [], "stop_reason": stop, "usage": {"input_tokens": 1, "output_tokens": 1}}
    assert anthropic_to_openai_response(body)["choices"][0]["finish_reason"] == finish


def test_invalid_tool_id_from_anthropic_upstream_is_sanitised():
    body = {"id": "msg_1", "model": "k", "content": [{"type": "tool_use", "id": "functions.Bash:0", "name": "Bash", "input": {}}],
            "stop_reason": "tool_use", "usage": {}}
    assert anthropic_to_openai_response(body)["choices"][0]["message"]["tool_calls"][0]["id"] == sanitize_tool_id("functions.Bash:0")


@settings(max_examples=100, deadline=None)
@given(answers())
def test_generated_openai_answers_validate_as_anthropic_messages(answer):
    out = openai_to_anthropic_response(openai_body(answer), TURN)
    msg = anthropic.types.Message.model_validate(out)
    assert [c.input for c in msg.content if c.type == "tool_use"] == [c.input for c in answer.calls]
    assert out["usage"]["input_tokens"] + out["usage"]["cache_read_input_tokens"] == answer.prompt
    assert all(b["type"] != "text" or b["text"] for b in out["content"])


@settings(max_examples=100, deadline=None)
@given(anthropic_answers())
def test_generated_anthropic_answers_validate_as_openai_completions(answer):
    out = anthropic_to_openai_response(anthropic_body(answer))
    openai.types.chat.ChatCompletion.model_validate(out)
    calls = out["choices"][0]["message"].get("tool_calls") or []
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [b["input"] for b in answer.blocks if b["type"] == "tool_use"]
    u = answer.usage
    assert out["usage"]["prompt_tokens"] == u["input_tokens"] + u["cache_creation_input_tokens"] + u["cache_read_input_tokens"]
