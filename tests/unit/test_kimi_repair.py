"""Each Kimi repair rule on its own (docs/kimi.md sections 1 and 2), in both upstream dialects."""

from __future__ import annotations

import pytest

from rawproxy.core.errors import ClientError
from rawproxy.core.ids import is_proxy_signature, tool_call_id
from rawproxy.core.reasoning import Reasoning
from rawproxy.kimi import policy_for, repair_anthropic, repair_openai, turn_keys_anthropic, turn_keys_openai

KEY = "a" * 20
CALL_ID = tool_call_id(KEY, 0, "call")
TOOLU_ID = tool_call_id(KEY, 0, "toolu")


def oa_tool_turn(**extra):
    msg = {"role": "assistant", "content": None,
           "tool_calls": [{"id": CALL_ID, "type": "function", "function": {"name": "Bash", "arguments": "{}"}}]}
    msg.update(extra)
    return msg


def oa_body(*messages, **extra):
    body = {"model": "kimi-k2.5", "messages": [{"role": "user", "content": "hi"}, *messages]}
    body.update(extra)
    return body


# --- OpenAI-format upstream -------------------------------------------------------------

def test_openai_dropped_reasoning_comes_back_from_the_store():
    body = oa_body(oa_tool_turn(), {"role": "tool", "tool_call_id": CALL_ID, "content": "ok"})
    repairs = repair_openai(body, {KEY: Reasoning("I will run Bash.")})
    assert body["messages"][1]["reasoning_content"] == "I will run Bash."
    assert "reasoning_restored" in repairs


def test_openai_falls_back_to_the_turns_own_text_then_a_space():
    with_text = oa_body(oa_tool_turn(content="Let me check."))
    repair_openai(with_text, {})
    assert with_text["messages"][1]["reasoning_content"] == "Let me check."
    bare = oa_body(oa_tool_turn())
    assert "reasoning_placeholder" in repair_openai(bare, {})
    assert bare["messages"][1]["reasoning_content"] == " "


def test_openai_keeps_reasoning_the_client_sent():
    body = oa_body(oa_tool_turn(reasoning_content="client kept this"))
    repair_openai(body, {KEY: Reasoning("stored")})
    assert body["messages"][1]["reasoning_content"] == "client kept this"


def test_openai_empty_string_reasoning_counts_as_missing():
    body = oa_body(oa_tool_turn(reasoning_content=""))
    repair_openai(body, {KEY: Reasoning("stored")})
    assert body["messages"][1]["reasoning_content"] == "stored"


def test_openai_sampling_parameters_are_dropped():
    body = oa_body(temperature=0.3, top_p=0.5, n=1, presence_penalty=0.1, frequency_penalty=0.2)
    assert "sampling_dropped" in repair_openai(body, {})
    assert not {"temperature", "top_p", "n", "presence_penalty", "frequency_penalty"} & body.keys()


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "Bash"}}])
def test_openai_forced_tool_choice_falls_back_to_auto_with_thinking(choice):
    body = oa_body(tool_choice=choice)
    repair_openai(body, {})
    assert body["tool_choice"] == "auto"


def test_openai_forced_tool_choice_kept_when_thinking_disabled_on_k25():
    body = oa_body(tool_choice="required", thinking={"type": "disabled"})
    repair_openai(body, {})
    assert body["tool_choice"] == "required" and body["thinking"] == {"type": "disabled"}


def test_openai_disabled_thinking_becomes_enabled_for_models_that_refuse_it():
    body = oa_body(thinking={"type": "disabled"})
    body["model"] = "kimi-k2.7-code"
    repair_openai(body, {})
    assert body["thinking"] == {"type": "enabled"}


def test_openai_reasoning_effort_dropped_for_k2_kept_for_k3():
    k2 = oa_body(reasoning_effort="high")
    repair_openai(k2, {})
    assert "reasoning_effort" not in k2
    k3 = oa_body(reasoning_effort="medium", thinking={"type": "enabled"})
    k3["model"] = "kimi-k3"
    repair_openai(k3, {})
    assert k3["reasoning_effort"] == "high" and "thinking" not in k3


def test_openai_empty_content_beside_tool_calls_is_removed():
    body = oa_body(oa_tool_turn(content=""))
    repair_openai(body, {})
    assert "content" not in body["messages"][1]
    parts = oa_body(oa_tool_turn(content=[{"type": "text", "text": ""}]))
    repair_openai(parts, {})
    assert "content" not in parts["messages"][1]


def test_openai_empty_assistant_message_is_dropped():
    body = oa_body({"role": "assistant", "content": ""}, {"role": "user", "content": "again"})
    assert "empty_assistant_dropped" in repair_openai(body, {})
    assert [m["role"] for m in body["messages"]] == ["user", "user"]


def test_openai_too_many_tools_is_a_clear_client_error():
    tools = [{"type": "function", "function": {"name": f"t{i}"}} for i in range(129)]
    with pytest.raises(ClientError, match="at most 128 tools"):
        repair_openai(oa_body(tools=tools), {})


def test_openai_turn_keys_come_from_proxy_ids_only():
    body = oa_body(oa_tool_turn(), {"role": "assistant", "tool_calls": [{"id": "functions.Bash:0"}]})
    assert turn_keys_openai(body) == {KEY}


# --- Anthropic-format upstream ----------------------------------------------------------

def an_tool_turn(*blocks):
    return {"role": "assistant", "content": [*blocks, {"type": "tool_use", "id": TOOLU_ID, "name": "Bash", "input": {}}]}


def an_body(*messages, **extra):
    body = {"model": "kimi-k2.5", "max_tokens": 32000, "messages": [{"role": "user", "content": "hi"}, *messages]}
    body.update(extra)
    return body


def result():
    return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": TOOLU_ID, "content": "ok"}]}


def test_anthropic_thinking_block_restored_with_the_upstreams_signature():
    body = an_body(an_tool_turn(), result())
    repairs = repair_anthropic(body, {KEY: Reasoning("real thoughts", "upstream-sig")})
    first = body["messages"][1]["content"][0]
    assert first == {"type": "thinking", "thinking": "real thoughts", "signature": "upstream-sig"}
    assert "reasoning_restored" in repairs


def test_anthropic_placeholder_thinking_gets_a_proxy_signature():
    body = an_body(an_tool_turn(), result())
    repair_anthropic(body, {})
    first = body["messages"][1]["content"][0]
    assert first["thinking"] == " " and is_proxy_signature(first["signature"])


def test_anthropic_empty_thinking_block_is_filled_not_duplicated():
    body = an_body(an_tool_turn({"type": "thinking", "thinking": "", "signature": "s"}), result())
    repair_anthropic(body, {KEY: Reasoning("filled")})
    blocks = body["messages"][1]["content"]
    assert [b["type"] for b in blocks] == ["thinking", "tool_use"] and blocks[0]["thinking"] == "filled"


def test_anthropic_proxy_signature_swapped_for_the_stored_upstream_one():
    from rawproxy.core.ids import make_signature

    body = an_body(an_tool_turn({"type": "thinking", "thinking": "t", "signature": make_signature(KEY)}), result())
    repair_anthropic(body, {KEY: Reasoning("t", "kimi-sig")})
    assert body["messages"][1]["content"][0]["signature"] == "kimi-sig"


@pytest.mark.parametrize("thinking", [{"type": "adaptive", "display": "omitted"}, {"type": "adaptive", "budget_tokens": 0}])
def test_anthropic_adaptive_thinking_becomes_enabled_with_a_budget(thinking):
    body = an_body(thinking=thinking)
    repair_anthropic(body, {})
    assert body["thinking"]["type"] == "enabled" and 1024 <= body["thinking"]["budget_tokens"] < 32000


def test_anthropic_disabled_thinking_enabled_only_where_the_model_refuses_it():
    k25 = an_body(thinking={"type": "disabled"})
    repair_anthropic(k25, {})
    assert k25["thinking"] == {"type": "disabled"}
    k27 = an_body(thinking={"type": "disabled"})
    k27["model"] = "kimi-k2.7-code"
    repair_anthropic(k27, {})
    assert k27["thinking"]["type"] == "enabled"


def test_anthropic_k3_gets_no_thinking_field():
    body = an_body(thinking={"type": "enabled", "budget_tokens": 2000})
    body["model"] = "moonshotai/kimi-k3"
    repair_anthropic(body, {})
    assert "thinking" not in body


def test_anthropic_forced_tool_choice_falls_back_to_auto_keeping_parallel_switch():
    body = an_body(tool_choice={"type": "any", "disable_parallel_tool_use": True})
    repair_anthropic(body, {})
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_anthropic_sampling_dropped():
    body = an_body(temperature=0.2, top_p=0.9, top_k=5)
    repair_anthropic(body, {})
    assert not {"temperature", "top_p", "top_k"} & body.keys()


def test_anthropic_system_message_inside_messages_keeps_its_text_in_a_user_turn():
    body = an_body({"role": "system", "content": "Env: linux"}, {"role": "assistant", "content": "hello"})
    repair_anthropic(body, {})
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "assistant"]
    texts = [b["text"] for b in body["messages"][0]["content"]]
    assert texts[0] == "hi" and "Env: linux" in texts[1]


def test_anthropic_merged_user_turn_keeps_tool_results_first():
    body = an_body(an_tool_turn(), result(), {"role": "system", "content": [{"type": "text", "text": "note"}]})
    repair_anthropic(body, {})
    last = body["messages"][-1]["content"]
    assert [b["type"] for b in last] == ["tool_result", "text"]


def test_anthropic_tool_reference_becomes_text_and_empty_text_blocks_go():
    body = an_body({"role": "assistant", "content": [{"type": "text", "text": ""},
                                                     {"type": "tool_use", "id": TOOLU_ID, "name": "ToolSearch", "input": {}}]},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": TOOLU_ID,
                                                 "content": [{"type": "tool_reference", "tool_name": "WebFetch"}]}]})
    repairs = repair_anthropic(body, {})
    assert "tool_reference_to_text" in repairs and "empty_text_dropped" in repairs
    inner = body["messages"][2]["content"][0]["content"]
    assert inner == [{"type": "text", "text": "[tool reference: WebFetch]"}]
    assert all(b.get("text") != "" for b in body["messages"][1]["content"])


def test_anthropic_turn_keys():
    assert turn_keys_anthropic(an_body(an_tool_turn(), result())) == {KEY}


@pytest.mark.parametrize("model,family", [("kimi-k2.5", "k2"), ("Pro/moonshotai/Kimi-K2.6", "k2"),
                                          ("kimi-k2.7-code", "k2.7-code"), ("kimi-k2-thinking-turbo", "always-thinking"),
                                          ("kimi-for-coding", "always-thinking"), ("kimi-k3", "k3")])
def test_model_families(model, family):
    assert policy_for(model).family == family
