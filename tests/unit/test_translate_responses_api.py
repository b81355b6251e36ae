"""The OpenAI Responses API client dialect: requests to Chat Completions, Chat answers (whole
and streamed) back to Responses. Property tests run the streams through the real openai SDK."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawproxy.core.errors import ClientError
from rawproxy.core.ids import tool_call_id
from rawproxy.core.sse import SSEEvent, SSEParser
from rawproxy.translate import AnthropicToOpenAIStream, anthropic_to_openai_response, openai_to_anthropic_request
from rawproxy.translate.responses_api import (
    AnswerContext,
    ChatToResponsesStream,
    chat_to_responses_response,
    new_response_id,
    responses_to_chat_request,
)
from tests.unit.responses_strategies import (
    CODEX_ECHO,
    CREATED,
    CUSTOM,
    MODEL,
    NAMESPACED,
    RESPONSE_ID,
    SCOPED,
    TURN,
    as_sdk,
    check_responses_events,
    contexts,
    essence,
    responses_answers,
    sdk_snapshots,
    sdk_stream,
    seal,
    unseal,
)
from tests.unit.translate_strategies import (
    Answer,
    Call,
    anthropic_answers,
    anthropic_body,
    anthropic_stream,
    before_finish,
    chunk,
    cut,
    feed_text,
    openai_body,
    openai_stream,
    run,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def cut_of(data: bytes):
    return st.composite(lambda draw: cut(draw, data))()


def translator(context: AnswerContext | None = None) -> ChatToResponsesStream:
    return ChatToResponsesStream(MODEL, context, response_id=RESPONSE_ID, created_at=CREATED, turn_key=TURN, seal=seal)


def whole(body: dict, context: AnswerContext | None = None) -> dict:
    return chat_to_responses_response(body, MODEL, context, response_id=RESPONSE_ID, created_at=CREATED,
                                      turn_key=TURN, seal=seal)


# ---------------------------------------------------------------- property tests


@FAST
@given(st.data())
def test_stream_accumulated_by_the_sdk_equals_the_whole_answer(data):
    answer, context = data.draw(responses_answers()), data.draw(contexts())
    chunks = data.draw(cut_of(data.draw(openai_stream(answer))))
    t = translator(context)
    out = run(t, chunks)
    check_responses_events(out, "complete")
    expected = whole(openai_body(answer), context)
    assert t.ending == "complete" and t.status == expected["status"] and t.final_response == expected
    events, final = sdk_stream(out)
    if expected["status"] == "completed":
        assert final == as_sdk(expected)  # the SDK's own get_final_response()
    else:
        assert final is None and events[-1].type == "response.incomplete"
        assert events[-1].response.model_dump(mode="json", exclude_none=True) == as_sdk(expected)
    # what the SDK accumulated from the deltas alone equals the whole answer's items
    for index, snapshot in sdk_snapshots(events).items():
        item = expected["output"][index]
        assert snapshot == (item["content"][0]["text"] if item["type"] == "message" else item["arguments"])
    added = [e.item.type for e in events if e.type == "response.output_item.added"]
    assert added == [i["type"] for i in expected["output"]]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_anthropic_upstream_chained_through_chat_keeps_the_answer(data):
    # Anthropic events -> AnthropicToOpenAIStream -> this translator: what the pipeline
    # chains for an Anthropic-format upstream. Alternating kinds may split into more items.
    answer, context = data.draw(anthropic_answers()), data.draw(contexts())
    upstream = data.draw(anthropic_stream(answer))
    chat = run(AnthropicToOpenAIStream(MODEL, True), data.draw(cut_of(upstream)))
    out = run(translator(context), [b"".join(chat)])
    check_responses_events(out, "complete")
    expected = whole(anthropic_to_openai_response(anthropic_body(answer)), context)
    events, final = sdk_stream(out)
    got = final or events[-1].response.model_dump(mode="json", exclude_none=True)
    assert essence(got) == essence(as_sdk(expected))


@FAST
@given(st.data())
def test_stream_cut_anywhere_before_finish_ends_failed_never_completed(data):
    raw = data.draw(openai_stream(data.draw(responses_answers())))
    end = data.draw(st.integers(0, before_finish(raw, b'"finish_reason": "')))
    t = translator(data.draw(contexts()))
    out = run(t, data.draw(cut_of(raw[:end])) if end else [])
    payloads = check_responses_events(out, "failed")
    assert t.ending == "failed" and t.status == "failed"
    assert payloads[-1]["response"]["error"]["code"] == "server_error"
    events, final = sdk_stream(out)
    assert final is None and events[-1].type == "response.failed"


@FAST
@given(st.data())
def test_answer_output_sent_back_as_input_restores_the_chat_message(data):
    # Codex replays a turn's output items as the next request's input: the upstream must
    # see the assistant message it sent, reasoning included (sealed or as the summary).
    answer = data.draw(responses_answers())
    context = AnswerContext(custom_tools=frozenset({CUSTOM}), namespaced=NAMESPACED,
                            summary=data.draw(st.booleans()), encrypted_reasoning=True)
    body = openai_body(answer)
    output = whole(body, context)["output"]
    replay = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]}]
    replay += [{k: v for k, v in item.items() if k != "id"} for item in output]  # Codex drops ids
    chat = responses_to_chat_request({"model": "m", "input": replay}, unseal).chat["messages"]
    original = body["choices"][0]["message"]
    if not original.get("content") and not original.get("tool_calls"):
        assert chat == [{"role": "user", "content": "go"}]  # reasoning alone attaches to nothing
        return
    assert chat[0] == {"role": "user", "content": "go"} and len(chat) == 2
    got = chat[1]
    assert got.get("content") == (original["content"] or ("" if not original.get("tool_calls") else None))
    assert got.get("reasoning_content") == original.get("reasoning_content")
    assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in got.get("tool_calls", [])] == \
        [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in original.get("tool_calls", [])]


# ---------------------------------------------------------------- requests: input items


def chat_of(body: dict, **kw) -> dict:
    return responses_to_chat_request({"model": "kimi", **body}, **kw).chat


def test_string_input_and_instructions():
    chat = chat_of({"instructions": "Be brief.", "input": "hi"})
    assert chat == {"model": "kimi", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]}


def test_input_start_marks_where_a_previous_conversation_goes():
    with_instructions = responses_to_chat_request({"instructions": "I", "input": "hi", "previous_response_id": "resp_1"})
    assert with_instructions.input_start == 1 and with_instructions.previous_response_id == "resp_1"
    assert responses_to_chat_request({"input": "hi"}).input_start == 0
    assert responses_to_chat_request({"previous_response_id": "resp_1"}).chat["messages"] == []


def test_message_parts_by_role():
    chat = chat_of({"input": [
        {"role": "developer", "content": "rules"},
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"},
            {"type": "input_text", "text": ""},
        ]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "only"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "seen", "annotations": []}]},
    ]})
    assert chat["messages"] == [
        {"role": "system", "content": "rules"},
        {"role": "system", "content": "a\n\nb"},
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "user", "content": "only"},
        {"role": "assistant", "content": "seen"},
    ]


def test_input_file_becomes_a_chat_file_part():
    chat = chat_of({"input": [{"role": "user", "content": [
        {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}]}]})
    assert chat["messages"][0]["content"] == [{"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}}]


def test_consecutive_function_calls_merge_into_one_assistant_message():
    chat = chat_of({"input": [
        {"role": "user", "content": "do it"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Running both."}]},
        {"type": "function_call", "call_id": "call_a", "name": "shell", "arguments": '{"command": ["ls"]}'},
        {"type": "function_call", "call_id": "call_b", "name": "read", "arguments": ""},
        {"type": "function_call_output", "call_id": "call_a", "output": "file.txt"},
        {"type": "function_call_output", "call_id": "call_b", "output": [{"type": "input_text", "text": "x"}, {"type": "input_text", "text": "y"}]},
        {"type": "function_call", "call_id": "call_c", "name": "shell", "arguments": "{}"},
    ]})
    assert chat["messages"][1:] == [
        {"role": "assistant", "content": "Running both.", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "shell", "arguments": '{"command": ["ls"]}'}},
            {"id": "call_b", "type": "function", "function": {"name": "read", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": "file.txt"},
        {"role": "tool", "tool_call_id": "call_b", "content": "x\n\ny"},
        # no content beside tool calls when there is no text: Kimi rejects an empty one
        {"role": "assistant", "tool_calls": [{"id": "call_c", "type": "function", "function": {"name": "shell", "arguments": "{}"}}]},
    ]


def test_tool_output_images_follow_the_run_of_tool_messages():
    image = {"type": "input_image", "image_url": "https://x/a.png"}
    chat = chat_of({"input": [
        {"type": "function_call", "call_id": "c1", "name": "shot", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "shot", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "here"}, image]},
        {"type": "function_call_output", "call_id": "c2", "output": "none"},
        {"role": "user", "content": "and?"},
    ]})
    assert [m["role"] for m in chat["messages"]] == ["assistant", "tool", "tool", "user", "user"]
    assert chat["messages"][1]["content"] == "here\n\n[image attached below]"
    assert chat["messages"][3] == {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}


def test_reasoning_attaches_to_the_next_assistant_message_with_text_or_calls():
    chat = chat_of({"input": [
        {"role": "user", "content": "q"},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "think"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": ""}]},  # empty: takes nothing
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "more"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "orphan"}]},
        {"role": "user", "content": "next"},
        {"type": "message", "role": "assistant", "content": "plain"},
    ]})
    assert chat["messages"][1] == {"role": "assistant", "reasoning_content": "think\n\nmore",
                                   "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    assert chat["messages"][3:] == [{"role": "user", "content": "next"}, {"role": "assistant", "content": "plain"}]


def test_sealed_reasoning_is_preferred_and_a_forged_token_is_ignored():
    item = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "short"}],
            "encrypted_content": seal("the whole reasoning", TURN)}
    call = {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}
    assert chat_of({"input": [item, call]}, unseal=unseal)["messages"][0]["reasoning_content"] == "the whole reasoning"
    forged = dict(item, encrypted_content="gAAAAABopenai-made")
    assert chat_of({"input": [forged, call]}, unseal=unseal)["messages"][0]["reasoning_content"] == "short"
    assert chat_of({"input": [item, call]})["messages"][0]["reasoning_content"] == "short"  # no unseal given
    bare = {"type": "reasoning", "summary": [], "encrypted_content": "gAAAA-not-ours"}
    assert "reasoning_content" not in chat_of({"input": [bare, call]}, unseal=unseal)["messages"][0]


def test_custom_tool_definition_call_and_output():
    grammar = {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch" /(.|\\n)*/'}
    result = responses_to_chat_request({"model": "kimi", "tools": [
        {"type": "custom", "name": "apply_patch", "description": "Edit files.", "format": grammar},
    ], "input": [
        {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "*** Begin Patch\né"},
        {"type": "custom_tool_call_output", "call_id": "c1", "output": "Done"},
    ]})
    fn = result.chat["tools"][0]["function"]
    assert fn["name"] == "apply_patch" and fn["description"].startswith("Edit files.") and grammar["definition"] in fn["description"]
    assert fn["parameters"] == {"type": "object", "properties": {"input": {"type": "string", "description": "The tool's input, as free text."}},
                                "required": ["input"]}
    assert result.custom_tools == frozenset({"apply_patch"}) == result.context.custom_tools
    call = result.chat["messages"][0]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"input": "*** Begin Patch\né"}
    assert result.chat["messages"][1] == {"role": "tool", "tool_call_id": "c1", "content": "Done"}


def test_hosted_tools_are_dropped_and_reported_never_refused():
    result = responses_to_chat_request({"model": "kimi", "input": "hi", "tool_choice": {"type": "web_search_preview"}, "tools": [
        {"type": "web_search"}, {"type": "web_search_preview"}, {"type": "file_search", "vector_store_ids": ["v"]},
        {"type": "code_interpreter", "container": {"type": "auto"}}, {"type": "computer_use_preview", "display_width": 1},
        {"type": "image_generation"}, {"type": "local_shell"}, {"type": "mcp", "server_label": "x"}, {"type": "web_search"},
        {"type": "function", "name": "shell", "parameters": {"type": "object", "properties": {}}},
    ]})
    assert result.dropped_tools == ("web_search", "web_search_preview", "file_search", "code_interpreter",
                                    "computer_use_preview", "image_generation", "local_shell", "mcp")
    assert [t["function"]["name"] for t in result.chat["tools"]] == ["shell"]
    assert result.chat["tool_choice"] == "auto"  # forcing a tool nothing can run: let the model choose


def test_only_hosted_tools_means_no_tools_and_no_tool_choice():
    chat = chat_of({"input": "hi", "tools": [{"type": "web_search"}], "tool_choice": "required", "parallel_tool_calls": False})
    assert "tools" not in chat and "tool_choice" not in chat and "parallel_tool_calls" not in chat


def test_hosted_tool_history_items_are_skipped_and_reported():
    result = responses_to_chat_request({"model": "kimi", "input": [
        {"role": "user", "content": "news?"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search", "query": "x"}},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Here."}]},
    ]})
    assert result.skipped_items == ("web_search_call",)
    assert [m["role"] for m in result.chat["messages"]] == ["user", "assistant"]


def test_namespace_tools_are_flattened_and_answers_split_back():
    result = responses_to_chat_request({"model": "kimi", "tools": [{"type": "namespace", "name": "collab", "description": "Agents.", "tools": [
        {"type": "function", "name": "spawn_agent", "description": "Spawn.", "parameters": {"type": "object", "properties": {}}},
    ]}], "input": [{"type": "function_call", "call_id": "c", "name": "spawn_agent", "namespace": "collab", "arguments": "{}"}]})
    assert result.chat["tools"][0]["function"]["name"] == SCOPED
    assert result.chat["tools"][0]["function"]["description"] == "Spawn.\n\n(collab: Agents.)"
    assert result.chat["messages"][0]["tool_calls"][0]["function"]["name"] == SCOPED
    call = {"id": "c2", "type": "function", "function": {"name": SCOPED, "arguments": "{}"}}
    item = whole({"choices": [{"message": {"tool_calls": [call]}, "finish_reason": "tool_calls"}]}, result.context)["output"][0]
    assert (item["type"], item["name"], item["namespace"]) == ("function_call", "spawn_agent", "collab")


def test_additional_tools_items_add_tools():
    chat = chat_of({"input": [{"type": "additional_tools", "role": "developer", "tools": [
        {"type": "function", "name": "later", "parameters": {"type": "object", "properties": {}}}]}, {"role": "user", "content": "go"}]})
    assert [t["function"]["name"] for t in chat["tools"]] == ["later"] and chat["messages"] == [{"role": "user", "content": "go"}]


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", "auto"), ("none", "none"), ("required", "required"),
    ({"type": "function", "name": "shell"}, {"type": "function", "function": {"name": "shell"}}),
    ({"type": "custom", "name": "apply_patch"}, {"type": "function", "function": {"name": "apply_patch"}}),
])
def test_tool_choice(choice, expected):
    tools = [{"type": "function", "name": "shell"}, {"type": "custom", "name": "apply_patch"}]
    chat = chat_of({"input": "x", "tools": tools, "tool_choice": choice, "parallel_tool_calls": False})
    assert chat["tool_choice"] == expected and chat["parallel_tool_calls"] is False


def test_allowed_tools_choice_offers_only_the_allowed_subset():
    tools = [{"type": "function", "name": "a"}, {"type": "function", "name": "b"}, {"type": "web_search"}]
    choice = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "b"}, {"type": "web_search"}]}
    chat = chat_of({"input": "x", "tools": tools, "tool_choice": choice})
    assert [t["function"]["name"] for t in chat["tools"]] == ["b"] and chat["tool_choice"] == "required"
    assert chat["tools"][0]["function"]["parameters"] == {"type": "object", "properties": {}}


def test_settings_map_and_client_only_fields_stay_behind():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    result = responses_to_chat_request({
        "model": "kimi", "input": "x", "stream": True, "max_output_tokens": 900, "temperature": 0.3, "top_p": 0.9,
        "reasoning": {"effort": "high", "summary": "detailed"}, "include": ["reasoning.encrypted_content"],
        "text": {"format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True}, "verbosity": "low"},
        "metadata": {"k": "v"}, "user": "u1", "store": False, "prompt_cache_key": "thread", "previous_response_id": "resp_1",
        "service_tier": "auto", "truncation": "disabled",
    })
    assert result.chat == {
        "model": "kimi", "messages": [{"role": "user", "content": "x"}], "max_tokens": 900, "temperature": 0.3, "top_p": 0.9,
        "reasoning_effort": "high", "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}},
        "user": "u1", "stream": True, "stream_options": {"include_usage": True},
    }
    assert result.previous_response_id == "resp_1" and result.store is False and result.stream is True
    assert result.context.encrypted_reasoning and result.context.summary and not result.context.raw_reasoning
    assert result.context.echo["metadata"] == {"k": "v"} and result.context.echo["max_output_tokens"] == 900
    assert chat_of({"input": "x", "text": {"format": {"type": "json_object"}}})["response_format"] == {"type": "json_object"}
    assert "response_format" not in chat_of({"input": "x", "text": {"format": {"type": "text"}}})


@pytest.mark.parametrize(("reasoning", "summary"), [
    (None, True), ({"effort": "low"}, True), ({"summary": "auto"}, True), ({"summary": "concise"}, True),
    ({"summary": None}, False), ({"summary": "none"}, False), ({"generate_summary": "detailed"}, True),
])
def test_reasoning_summary_shown_unless_the_client_declines(reasoning, summary):
    body = {"model": "kimi", "input": "x"} | ({"reasoning": reasoning} if reasoning is not None else {})
    assert responses_to_chat_request(body).context.summary is summary


def test_raw_reasoning_is_the_callers_choice():
    assert responses_to_chat_request({"input": "x"}, raw_reasoning=True).context.raw_reasoning


def test_request_is_not_mutated_and_the_chat_body_shares_no_schema():
    body = {"model": "kimi", "tools": [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}],
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "x"}]},
                      {"type": "function_call", "call_id": "c", "name": "f", "arguments": ""}]}
    before = copy.deepcopy(body)
    chat = responses_to_chat_request(body).chat
    assert body == before
    chat["tools"][0]["function"]["parameters"]["properties"]["added"] = {}
    assert body == before


def test_codex_shaped_request_also_crosses_to_an_anthropic_upstream():
    # the pipeline chains Responses -> Chat -> Anthropic for an Anthropic-format upstream
    result = responses_to_chat_request({
        "model": "kimi", "instructions": "You are Codex.", "tools": CODEX_ECHO["tools"], "tool_choice": "auto",
        "parallel_tool_calls": False, "reasoning": {"effort": "medium", "summary": "auto"}, "store": False, "stream": True,
        "include": ["reasoning.encrypted_content"], "prompt_cache_key": "t",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<permissions>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<env>"}, {"type": "input_text", "text": "fix it"}]},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "plan"}], "encrypted_content": seal("plan in full", TURN)},
            {"type": "function_call", "call_id": tool_call_id(TURN, 0, "call"), "name": "shell", "arguments": '{"command": ["ls"]}'},
            {"type": "function_call_output", "call_id": tool_call_id(TURN, 0, "call"), "output": "a.py"},
            {"type": "custom_tool_call", "call_id": tool_call_id(TURN, 1, "call"), "name": CUSTOM, "input": "*** Begin Patch"},
            {"type": "custom_tool_call_output", "call_id": tool_call_id(TURN, 1, "call"), "output": "ok"},
        ],
    }, unseal)
    assert result.dropped_tools == ("web_search",)
    anthropic = openai_to_anthropic_request(result.chat)
    assert anthropic["system"] == "You are Codex.\n\n<permissions>"
    assert anthropic["messages"][1]["content"][0] == {"type": "thinking", "thinking": "plan in full",
                                                      "signature": anthropic["messages"][1]["content"][0]["signature"]}
    assert anthropic["messages"][3]["content"] == [{"type": "tool_use", "id": tool_call_id(TURN, 1, "call"), "name": CUSTOM, "input": {"input": "*** Begin Patch"}}]


@pytest.mark.parametrize(("body", "message"), [
    ({"input": 5}, "input must be a string or a list of items"),
    ({"input": ["x"]}, "input[0] must be an object"),
    ({"input": [{"role": "user", "content": "a"}, {"role": "x", "content": "a"}]}, "input[1].role must be one of"),
    ({"input": [{"role": "user", "content": 3}]}, "input[0].content must be a string or a list of content parts"),
    ({"input": [{"role": "user", "content": [{"type": "input_text", "text": 1}]}]}, "input[0].content[0].text must be a string"),
    ({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input[0].content[0].type 'input_audio' is not supported"),
    ({"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "u"}]}]}, "input[0].content[0].type 'input_image'"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}, "input[0].content[0].image_url must be a string"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input[0].content[0].file_data must be a string"),
    ({"input": [{}, {}, {}, {"type": "function_call", "call_id": 7, "name": "f", "arguments": "{}"}]}, "input[0].type None"),
    ({"input": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "user", "content": "c"},
                {"type": "function_call", "call_id": 7, "name": "f", "arguments": "{}"}]}, "input[3].call_id must be a string"),
    ({"input": [{"type": "function_call", "call_id": "c", "arguments": "{}"}]}, "input[0].name must be a string"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]}, "input[0].arguments must be a string"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id must be a string"),
    ({"input": [{"type": "function_call_output", "call_id": "c"}]}, "input[0].output is required"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": {"a": 1}}]}, "input[0].output must be a string or a list"),
    ({"input": [{"type": "custom_tool_call", "call_id": "c", "name": "f", "input": 1}]}, "input[0].input must be a string"),
    ({"input": [{"type": "reasoning", "summary": "x"}]}, "input[0].summary must be a list"),
    ({"input": [{"type": "reasoning", "summary": [{"type": "summary_text", "text": 1}]}]}, "input[0].summary[0].text must be a string"),
    ({"input": [{"type": "reasoning", "summary": [], "encrypted_content": 5}]}, "input[0].encrypted_content must be a string"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type 'item_reference' is not supported"),
    ({"input": "x", "instructions": 1}, "instructions must be a string"),
    ({"input": "x", "tools": {}}, "tools must be a list of tools"),
    ({"input": "x", "tools": [{"type": "function", "name": "a"}, {"type": "function"}]}, "tools[1].name must be a string"),
    ({"input": "x", "tools": [{"name": "a"}]}, "tools[0].type must be a string"),
    ({"input": "x", "tools": [{"type": "function", "name": "a", "parameters": "x"}]}, "tools[0].parameters must be an object"),
    ({"input": "x", "tools": [{"type": "namespace", "name": "n", "tools": [{"type": "function", "name": 2}]}]}, "tools[0].tools[0].name must be a string"),
    ({"input": "x", "tool_choice": "sometimes"}, "tool_choice must be auto, none, required or an object"),
    ({"input": "x", "tool_choice": {"type": "function"}}, "tool_choice.name must be a string"),
    ({"input": "x", "parallel_tool_calls": "yes"}, "parallel_tool_calls must be a boolean"),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens must be a positive integer"),
    ({"input": "x", "max_output_tokens": True}, "max_output_tokens must be a positive integer"),
    ({"input": "x", "temperature": "hot"}, "temperature must be a number"),
    ({"input": "x", "reasoning": "high"}, "reasoning must be an object"),
    ({"input": "x", "reasoning": {"effort": 3}}, "reasoning.effort must be a string"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "o"}}}, "text.format.schema must be an object"),
    ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type 'yaml' is not supported"),
    ({"input": "x", "include": "reasoning.encrypted_content"}, "include must be a list of strings"),
    ({"input": "x", "stream": "true"}, "stream must be a boolean"),
    ({"input": "x", "background": True}, "background responses are not supported"),
    ({"input": "x", "conversation": "conv_1"}, "conversation objects are not supported"),
    ({"input": "x", "prompt": {"id": "pmpt_1"}}, "prompt templates are not supported"),
    ({"input": "x", "previous_response_id": 5}, "previous_response_id must be a string"),
    ({"input": "x", "store": "no"}, "store must be a boolean"),
])
def test_malformed_requests_are_400s_naming_the_field(body, message):
    with pytest.raises(ClientError) as caught:
        responses_to_chat_request({"model": "kimi", **body})
    assert caught.value.status == 400 and message in caught.value.message


# ---------------------------------------------------------------- answers (non-streaming)

USAGE = {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150, "cached_tokens": 100,
         "completion_tokens_details": {"reasoning_tokens": 12}}


def chat_answer(message: dict, finish: str = "stop", usage: dict | None = USAGE, in_choice: bool = False) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
    body = {"id": "cmpl-1", "object": "chat.completion", "created": 1, "model": "kimi-k2.6", "choices": [choice]}
    if in_choice:
        choice["usage"] = usage
    else:
        body["usage"] = usage
    return body


def test_answer_items_in_order_with_usage():
    calls = [{"id": "call_1", "type": "function", "function": {"name": "shell", "arguments": '{"command": ["ls"]}'}},
             {"id": "call_2", "type": "function", "function": {"name": "read", "arguments": ""}}]
    out = whole(chat_answer({"content": "Looking.", "reasoning_content": "need ls", "tool_calls": calls}, "tool_calls"))
    assert [(i["type"], i["id"]) for i in out["output"]] == [
        ("reasoning", "rs_0123456789abcdef_0"), ("message", "msg_0123456789abcdef_1"),
        ("function_call", "fc_0123456789abcdef_2"), ("function_call", "fc_0123456789abcdef_3")]
    assert out["output"][0]["summary"] == [{"type": "summary_text", "text": "need ls"}]
    assert out["output"][1]["content"][0]["text"] == "Looking." and out["output"][1]["status"] == "completed"
    assert [(i["call_id"], i["name"], i["arguments"], i["status"]) for i in out["output"][2:]] == [
        ("call_1", "shell", '{"command": ["ls"]}', "completed"), ("call_2", "read", "{}", "completed")]
    assert out["usage"] == {"input_tokens": 120, "input_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 0},
                            "output_tokens": 30, "output_tokens_details": {"reasoning_tokens": 12}, "total_tokens": 150}
    assert (out["id"], out["object"], out["created_at"], out["model"], out["status"]) == (RESPONSE_ID, "response", CREATED, MODEL, "completed")
    assert out["incomplete_details"] is None and out["error"] is None
    as_sdk(out)


@pytest.mark.parametrize("where", ["top", "details", "in_choice"])
def test_cached_tokens_wherever_kimi_puts_them(where):
    usage: dict = {"prompt_tokens": 50, "completion_tokens": 5}
    if where == "details":
        usage["prompt_tokens_details"] = {"cached_tokens": 40}
    else:
        usage["cached_tokens"] = 40
    out = whole(chat_answer({"content": "x"}, usage=usage, in_choice=where == "in_choice"))
    assert out["usage"]["input_tokens_details"]["cached_tokens"] == 40 and out["usage"]["total_tokens"] == 55


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")])
def test_cut_answers_are_incomplete_and_their_last_item_too(finish, reason):
    out = whole(chat_answer({"content": "partial", "reasoning_content": "r"}, finish))
    assert out["status"] == "incomplete" and out["incomplete_details"] == {"reason": reason}
    assert out["output"][1]["status"] == "incomplete"
    as_sdk(out)


def test_custom_tool_calls_come_back_as_custom_tool_call_items():
    context = AnswerContext(custom_tools=frozenset({CUSTOM}))
    calls = [{"id": "c1", "type": "function", "function": {"name": CUSTOM, "arguments": json.dumps({"input": "*** Begin Patch\n"})}},
             {"id": "c2", "type": "function", "function": {"name": CUSTOM, "arguments": "not json"}}]
    out = whole(chat_answer({"tool_calls": calls}, "tool_calls"), context)
    assert out["output"] == [
        {"id": "ctc_0123456789abcdef_0", "type": "custom_tool_call", "call_id": "c1", "name": CUSTOM, "input": "*** Begin Patch\n"},
        {"id": "ctc_0123456789abcdef_1", "type": "custom_tool_call", "call_id": "c2", "name": CUSTOM, "input": "not json"},
    ]
    as_sdk(out)


def test_reasoning_item_follows_what_the_client_asked():
    body = chat_answer({"content": "x", "reasoning_content": "deep"})
    hidden = whole(body, AnswerContext(summary=False, encrypted_reasoning=True))["output"][0]
    assert hidden == {"id": "rs_0123456789abcdef_0", "type": "reasoning", "summary": [], "encrypted_content": seal("deep", TURN)}
    raw = whole(body, AnswerContext(raw_reasoning=True))["output"][0]
    assert raw["content"] == [{"type": "reasoning_text", "text": "deep"}] and "encrypted_content" not in raw
    unsealed = chat_to_responses_response(body, MODEL, AnswerContext(encrypted_reasoning=True))["output"][0]
    assert "encrypted_content" not in unsealed  # no seal given: nothing to hand out


def test_missing_call_ids_and_odd_arguments():
    calls = [{"type": "function", "function": {"name": "f", "arguments": {"a": 1}}}, {"id": "", "function": {"name": "g"}}]
    out = whole(chat_answer({"tool_calls": calls}, "tool_calls"))
    assert [(i["call_id"], i["arguments"]) for i in out["output"]] == [
        (tool_call_id(TURN, 0, "call"), '{"a": 1}'), (tool_call_id(TURN, 1, "call"), "{}")]


def test_echo_fields_and_sdk_validation_with_codex_request():
    result = responses_to_chat_request({"model": "gpt-5-codex", "input": "x", **CODEX_ECHO, "max_output_tokens": 10})
    out = chat_to_responses_response(chat_answer({"content": "hi"}), "gpt-5-codex", result.context)
    assert out["tools"] == CODEX_ECHO["tools"] and out["parallel_tool_calls"] is False and out["tool_choice"] == "auto"
    assert out["reasoning"] == {"effort": "medium", "summary": "auto"} and out["max_output_tokens"] == 10
    assert out["id"].startswith("resp_") and out["id"] != new_response_id()
    as_sdk(out)


def test_empty_answer_and_no_usage():
    out = whole({"choices": [{"message": {"role": "assistant", "content": None}, "finish_reason": "stop"}]})
    assert out["output"] == [] and out["usage"] is None and out["status"] == "completed"
    as_sdk(out)


# ---------------------------------------------------------------- streams: named cases


def stream(*parts: str, context: AnswerContext | None = None, close: bool = True) -> tuple[ChatToResponsesStream, list[dict], list[bytes]]:
    t = translator(context)
    out = feed_text(t, parts, close)
    return t, [json.loads(SSEParser().feed(o)[0].data) for o in out], out


def test_kimi_stream_event_sequence():
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "shell", "arguments": '{"c":'}}
    t, events, out = stream(chunk({"role": "assistant", "content": ""}), chunk({"reasoning_content": "hm"}),
                            chunk({"content": "Ok"}), chunk({"tool_calls": [call]}),
                            chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}), chunk({}, "tool_calls", USAGE))
    check_responses_events(out, "complete")
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.reasoning_summary_part.added", "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done", "response.reasoning_summary_part.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed",
    ]
    assert events[-1]["response"]["output"][2]["arguments"] == '{"c": 1}'
    assert events[-1]["response"]["usage"]["output_tokens_details"]["reasoning_tokens"] == 12
    assert t.ending == "complete" and t.status == "completed" and t.final_response == events[-1]["response"]


def test_ending_is_none_while_running():
    t = translator()
    t.feed(SSEParser().feed(chunk({"content": "x"}).encode())[0])
    assert t.ending is None and t.status is None and t.final_response is None


def test_completion_waits_for_usage_that_follows_the_finish_reason():
    t = translator()
    parser = SSEParser()
    out = []
    for e in parser.feed((chunk({"content": "hi"}) + chunk({}, "stop")).encode()):
        out += t.feed(e)
    assert t.ending is None  # held for the usage chunk
    for e in parser.feed(chunk(usage=USAGE, choices=False).encode()):
        out += t.feed(e)
    check_responses_events(out, "complete")
    assert json.loads(SSEParser().feed(out[-1])[0].data)["response"]["usage"]["input_tokens"] == 120


@pytest.mark.parametrize("ending", ["done", "close"])
def test_finish_without_usage_completes_on_done_or_close(ending):
    parts = [chunk({"content": "hi"}), chunk({}, "stop")] + (["data: [DONE]\n\n"] if ending == "done" else [])
    t, events, out = stream(*parts)
    check_responses_events(out, "complete")
    assert events[-1]["response"]["usage"] is None and t.status == "completed"


def test_done_without_finish_reason_completes():
    t, events, out = stream(chunk({"content": "x"}), "data: [DONE]\n\n")
    check_responses_events(out, "complete")
    assert events[-1]["type"] == "response.completed"


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")])
def test_cut_stream_ends_incomplete_with_its_last_item_marked(finish, reason):
    t, events, out = stream(chunk({"content": "trunc"}), chunk({}, finish, USAGE))
    check_responses_events(out, "complete")
    assert events[-1]["type"] == "response.incomplete" and events[-1]["response"]["incomplete_details"] == {"reason": reason}
    assert events[-1]["response"]["output"][0]["status"] == "incomplete"
    assert t.ending == "complete" and t.status == "incomplete"


def test_upstream_cut_before_any_chunk_still_starts_then_fails():
    t, events, out = stream()
    check_responses_events(out, "failed")
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "response.failed"]
    assert t.ending == "failed"


@pytest.mark.parametrize(("err", "code"), [
    ({"message": "overloaded", "type": "engine_overloaded_error"}, "server_error"),
    ({"message": "slow down", "type": "rate_limit_reached_error"}, "rate_limit_exceeded"),
    ({"message": "slow down", "type": "rate_limit_error"}, "rate_limit_exceeded"),
    ({"message": "too long", "type": "invalid_request_error", "code": "context_length_exceeded"}, "context_length_exceeded"),
    ({"message": "pay", "type": "exceeded_current_quota_error"}, "insufficient_quota"),
    ({"message": "boom", "code": 500}, "server_error"),
])
def test_upstream_error_chunk_becomes_response_failed(err, code):
    t, events, out = stream(chunk({"content": "partial"}), f"data: {json.dumps({'error': err})}\n\n", chunk({"content": "ignored"}))
    check_responses_events(out, "failed")
    assert events[-1]["response"]["error"] == {"code": code, "message": err["message"]}
    assert events[-1]["response"]["output"] == []  # the message never finished
    sdk_events, final = sdk_stream(out)  # the SDK streams it without raising
    assert final is None and sdk_events[-1].type == "response.failed"


@pytest.mark.parametrize("bad", ["data: {not json\n\n", "data: [1, 2]\n\n"])
def test_malformed_chunk_fails(bad):
    t, events, out = stream(chunk({"content": "a"}), bad)
    check_responses_events(out, "failed")
    assert events[-1]["response"]["error"]["message"] == "upstream sent a malformed stream event"


def test_interleaved_arguments_for_a_finished_call_fail_rather_than_vanish():
    a = {"index": 0, "id": "c0", "function": {"name": "A", "arguments": "{"}}
    b = {"index": 1, "id": "c1", "function": {"name": "B", "arguments": "{}"}}
    t, events, out = stream(chunk({"tool_calls": [a]}), chunk({"tool_calls": [b]}), chunk({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}))
    check_responses_events(out, "failed")
    assert "after it ended" in events[-1]["response"]["error"]["message"]


def test_arguments_before_the_name_and_calls_without_ids_are_delivered():
    early = {"index": 0, "function": {"arguments": '{"comm'}}
    late = {"index": 0, "id": "c0", "function": {"name": "Bash", "arguments": 'and": "pwd"}'}}
    nameless = {"index": 1, "function": {"name": "Read", "arguments": ""}}
    t, events, out = stream(chunk({"tool_calls": [early]}), chunk({"tool_calls": [late]}), chunk({"tool_calls": [nameless]}),
                            chunk({}, "tool_calls", USAGE))
    check_responses_events(out, "complete")
    calls = events[-1]["response"]["output"]
    assert (calls[0]["call_id"], calls[0]["arguments"]) == ("c0", '{"command": "pwd"}')
    assert (calls[1]["call_id"], calls[1]["name"], calls[1]["arguments"]) == (tool_call_id(TURN, 1, "call"), "Read", "{}")


def test_custom_tool_input_streams_once_the_call_ends():
    args = json.dumps({"input": "*** Begin Patch\n*** End Patch"})
    call = {"index": 0, "id": "c0", "function": {"name": CUSTOM, "arguments": args[:10]}}
    t, events, out = stream(chunk({"tool_calls": [call]}), chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[10:]}}]}),
                            chunk({}, "tool_calls", USAGE), context=AnswerContext(custom_tools=frozenset({CUSTOM})))
    check_responses_events(out, "complete")
    kinds = [e["type"] for e in events]
    assert "response.function_call_arguments.delta" not in kinds
    assert [e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta"] == ["*** Begin Patch\n*** End Patch"]
    assert events[-2]["item"] == {"id": "ctc_0123456789abcdef_0", "type": "custom_tool_call", "call_id": "c0", "name": CUSTOM,
                                  "input": "*** Begin Patch\n*** End Patch"}


def test_raw_reasoning_and_sealed_reasoning_in_the_stream():
    context = AnswerContext(summary=False, raw_reasoning=True, encrypted_reasoning=True)
    t, events, out = stream(chunk({"reasoning_content": "a"}), chunk({"reasoning": "b"}), chunk({}, "stop", USAGE), context=context)
    check_responses_events(out, "complete")
    kinds = [e["type"] for e in events]
    assert "response.reasoning_summary_text.delta" not in kinds
    assert [e["delta"] for e in events if e["type"] == "response.reasoning_text.delta"] == ["a", "b"]
    added = next(e for e in events if e["type"] == "response.output_item.added")["item"]
    assert "encrypted_content" not in added  # sealed once the whole text is known
    assert events[-2]["item"]["encrypted_content"] == seal("ab", TURN) and unseal(events[-2]["item"]["encrypted_content"]) == "ab"


def test_alternating_kinds_open_new_items_one_at_a_time():
    call = {"index": 0, "id": "c0", "function": {"name": "Read", "arguments": "{}"}}
    t, events, out = stream(chunk({"reasoning_content": "r1", "content": "t1", "tool_calls": [call]}),
                            chunk({"reasoning_content": "r2"}), chunk({"content": "t2"}), chunk({}, "tool_calls", USAGE))
    check_responses_events(out, "complete")
    assert [i["type"] for i in events[-1]["response"]["output"]] == ["reasoning", "message", "function_call", "reasoning", "message"]


def test_feed_after_the_end_and_a_second_close_do_nothing():
    t, events, out = stream(chunk({"content": "x"}), chunk({}, "stop", USAGE), close=False)
    assert t.ending == "complete"
    assert t.feed(SSEEvent(None, "[DONE]", b"", True)) == [] and t.close() == [] and t.fail("late") == []


def test_caller_can_fail_a_running_stream():
    t, events, out = stream(chunk({"content": "x"}), close=False)
    out += t.fail("upstream timed out")
    check_responses_events(out, "failed")
    assert t.ending == "failed" and t.final_response is not None
    assert t.final_response["error"] == {"code": "server_error", "message": "upstream timed out"}
    assert t.close() == []


def test_comments_and_other_choices_are_ignored():
    other = json.loads(chunk({"content": "second choice"})[6:])
    other["choices"][0]["index"] = 1
    t, events, out = stream(": keep-alive\n\n", chunk({"content": "x"}), f"data: {json.dumps(other)}\n\n", chunk({}, "stop", USAGE))
    check_responses_events(out, "complete")
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "x"


def test_stream_and_whole_answer_agree_on_a_named_answer():
    calls = [Call(tool_call_id(TURN, 0, "call"), "shell", {"command": ["ls"]}), Call(tool_call_id(TURN, 1, "call"), CUSTOM, {"input": "patch"})]
    answer = Answer("plan", "Doing it.", calls, 10, 5, 2, "tool_calls")
    context = AnswerContext(custom_tools=frozenset({CUSTOM}), encrypted_reasoning=True)
    parts = [chunk({"reasoning_content": "pl"}), chunk({"reasoning_content": "an"}), chunk({"content": "Doing it."})]
    for k, c in enumerate(calls):
        parts.append(chunk({"tool_calls": [{"index": k, "id": c.id, "function": {"name": c.name, "arguments": json.dumps(c.input)}}]}))
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "prompt_tokens_details": {"cached_tokens": 2}}
    t, events, out = stream(*parts, chunk({}, "tool_calls", usage), context=context)
    check_responses_events(out, "complete")
    assert t.final_response == whole(openai_body(answer), context)
