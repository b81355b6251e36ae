"""Stream translation: property tests through the real SDKs, and one test per converter
bug listed at the end of docs/protocols.md section 3."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawproxy.core.ids import is_proxy_signature, make_signature
from rawproxy.core.sse import SSEEvent, SSEParser
from rawproxy.translate import (
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
    anthropic_to_openai_response,
    openai_to_anthropic_response,
)
from tests.unit.translate_strategies import (
    MODEL,
    TURN,
    answers,
    anthropic_answers,
    anthropic_body,
    anthropic_final,
    anthropic_stream,
    as_anthropic_sdk,
    before_finish,
    check_anthropic_events,
    check_openai_chunks,
    chunk,
    cut,
    feed_text,
    openai_body,
    openai_essence,
    openai_final,
    openai_stream,
    run,
)

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------- property tests


@FAST
@given(st.data())
def test_openai_upstream_to_anthropic_client_matches_non_streaming(data):
    answer = data.draw(answers())
    chunks = data.draw(cut_of(data.draw(openai_stream(answer))))
    out = run(OpenAIToAnthropicStream(MODEL, TURN), chunks)
    check_anthropic_events(out)
    expected = as_anthropic_sdk(openai_to_anthropic_response(openai_body(answer), TURN))
    assert anthropic_final(out) == expected


@FAST
@given(st.data())
def test_anthropic_upstream_to_openai_client_matches_non_streaming(data):
    answer = data.draw(anthropic_answers())
    include_usage = data.draw(st.booleans())
    chunks = data.draw(cut_of(data.draw(anthropic_stream(answer))))
    out = run(AnthropicToOpenAIStream(MODEL, include_usage), chunks)
    check_openai_chunks(out, include_usage)
    got = openai_essence(openai_final(out))
    expected = openai_essence(anthropic_to_openai_response(anthropic_body(answer)))
    if not include_usage:
        expected["usage"] = None
    assert got == expected


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_both_translators_chained_keep_the_answer(data):
    # Kimi (OpenAI) -> Anthropic events -> OpenAI chunks: what an OpenAI client would see
    # through two proxy hops equals the two non-streaming translations.
    answer = data.draw(answers())
    upstream = data.draw(openai_stream(answer))
    first = run(OpenAIToAnthropicStream(MODEL, TURN), [upstream])
    out = run(AnthropicToOpenAIStream(MODEL, True), [b"".join(first)])
    check_openai_chunks(out, True)
    expected = anthropic_to_openai_response(openai_to_anthropic_response(openai_body(answer), TURN))
    assert openai_essence(openai_final(out)) == openai_essence(expected)


@FAST
@given(st.data())
def test_openai_upstream_cut_anywhere_before_finish_never_looks_complete(data):
    raw = data.draw(openai_stream(data.draw(answers())))
    end = data.draw(st.integers(0, before_finish(raw, b'"finish_reason": "')))
    out = run(OpenAIToAnthropicStream(MODEL, TURN), data.draw(cut_of(raw[:end])) if end else [])
    check_anthropic_events(out, complete=False)
    with pytest.raises(anthropic.APIStatusError):
        anthropic_final(out)


@FAST
@given(st.data())
def test_anthropic_upstream_cut_anywhere_before_message_stop_never_looks_complete(data):
    raw = data.draw(anthropic_stream(data.draw(anthropic_answers())))
    end = data.draw(st.integers(0, raw.find(b"event: message_stop")))
    out = run(AnthropicToOpenAIStream(MODEL, data.draw(st.booleans())), data.draw(cut_of(raw[:end])) if end else [])
    check_openai_chunks(out, True, complete=False)
    with pytest.raises(openai.APIError):
        openai_final(out)


def cut_of(data: bytes):
    return st.composite(lambda draw: cut(draw, data))()


# ---------------------------------------------------------------- helpers for named tests


USAGE = {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150, "cached_tokens": 100}


def o2a(*parts: str, close: bool = True) -> tuple[list[dict], list[bytes]]:
    out = feed_text(OpenAIToAnthropicStream(MODEL, TURN), parts, close)
    return [json.loads(SSEParser().feed(o)[0].data) for o in out], out


def blocks(events: list[dict]) -> list[dict]:
    """Content blocks rebuilt from events (a minimal accumulator for assertions)."""
    found: list[dict] = []
    for e in events:
        if e["type"] == "content_block_start":
            found.append(dict(e["content_block"], _json=""))
        elif e["type"] == "content_block_delta":
            b, d = found[e["index"]], e["delta"]
            if d["type"] == "input_json_delta":
                b["_json"] += d["partial_json"]
            elif d["type"] == "signature_delta":
                b["signature"] = d["signature"]
            else:
                key = d["type"].removesuffix("_delta")
                b[key] += d[key]
    return found


def a_event(payload: dict) -> str:
    return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n"


def a2o(*payloads: dict, include_usage: bool = True, close: bool = True) -> list[bytes]:
    t = AnthropicToOpenAIStream(MODEL, include_usage)
    parser = SSEParser()
    out: list[bytes] = []
    for p in payloads:
        for e in parser.feed(a_event(p).encode()):
            out += t.feed(e)
    if close:
        out += t.close()
    return out


MSG_START = {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "k",
                                                  "content": [], "stop_reason": None, "usage": {"input_tokens": 5, "output_tokens": 1}}}


# ---------------------------------------------------------------- converter bugs (docs/protocols.md section 3)


def test_bug_sse_data_split_across_tcp_chunks():
    # claude-code-router 198: one event split mid-JSON, mid-UTF-8 and mid-CRLF.
    stream = (chunk({"reasoning_content": "dénk ✓"}) + chunk({"content": "hé"}) + chunk({}, "stop", USAGE)).replace("\n", "\r\n")
    raw = (stream + "data: [DONE]\r\n\r\n").encode()
    whole, _ = o2a(raw.decode())
    t = OpenAIToAnthropicStream(MODEL, TURN)
    parser, out = SSEParser(), []
    for i in range(len(raw)):
        for e in parser.feed(raw[i:i + 1]):
            out += t.feed(e)
    out += t.close()
    check_anthropic_events(out)
    assert [json.loads(SSEParser().feed(o)[0].data) for o in out] == whole
    assert anthropic_final(out)["content"][1]["text"] == "hé"


@pytest.mark.parametrize("where", ["in_choice", "trailing", "after_finish_chunk"])
def test_bug_usage_not_only_zeroed_in_message_start(where):
    # LiteLLM 24176: the real figures must reach message_delta, wherever Kimi puts them.
    if where == "in_choice":
        parts = [chunk({"content": "hi"}), chunk({}, "stop", USAGE), "data: [DONE]\n\n"]
    else:
        parts = [chunk({"content": "hi"}), chunk({}, "stop"), chunk(usage=USAGE, choices=False), "data: [DONE]\n\n"]
    if where == "after_finish_chunk":
        parts = parts[:-1]  # no [DONE]: usage after finish_reason, then the connection ends
    events, out = o2a(*parts)
    delta = [e for e in events if e["type"] == "message_delta"][0]
    assert delta["usage"] == {"input_tokens": 20, "output_tokens": 30, "cache_read_input_tokens": 100}
    final = anthropic_final(out)
    assert final["usage"] == {"input_tokens": 20, "output_tokens": 30, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 0}


def test_message_delta_waits_for_usage_that_follows_finish_reason():
    t = OpenAIToAnthropicStream(MODEL, TURN)
    parser = SSEParser()
    out = []
    for e in parser.feed((chunk({"content": "hi"}) + chunk({}, "stop")).encode()):
        out += t.feed(e)
    types = [json.loads(SSEParser().feed(o)[0].data)["type"] for o in out]
    assert "message_delta" not in types and "message_stop" not in types  # held for usage
    for e in parser.feed(chunk(usage=USAGE, choices=False).encode()):
        out += t.feed(e)
    assert json.loads(SSEParser().feed(out[-2])[0].data)["usage"]["output_tokens"] == 30


@pytest.mark.parametrize("same_chunk", [False, True])
def test_bug_first_text_delta_after_thinking_not_dropped(same_chunk):
    # LiteLLM 30765: the delta that switches kind must be delivered.
    if same_chunk:
        parts = [chunk({"reasoning_content": "think"}), chunk({"reasoning_content": "!", "content": "First"}), chunk({"content": " word"})]
    else:
        parts = [chunk({"reasoning_content": "think!"}), chunk({"content": "First"}), chunk({"content": " word"})]
    events, out = o2a(*parts, chunk({}, "stop", USAGE))
    check_anthropic_events(out)
    found = blocks(events)
    assert [b["type"] for b in found] == ["thinking", "text"]
    assert found[0]["thinking"] == "think!" and found[1]["text"] == "First word"
    assert found[0]["signature"] == make_signature(TURN) and is_proxy_signature(found[0]["signature"])


def test_bug_tool_call_before_any_text():
    call = {"index": 0, "id": "functions.Bash:0", "type": "function", "function": {"name": "Bash", "arguments": '{"command": "ls"}'}}
    events, out = o2a(chunk({"role": "assistant", "content": None, "tool_calls": [call]}), chunk({}, "tool_calls", USAGE))
    check_anthropic_events(out)
    found = blocks(events)
    assert [b["type"] for b in found] == ["tool_use"]
    final = anthropic_final(out)
    assert final["content"][0]["input"] == {"command": "ls"} and final["stop_reason"] == "tool_use"
    assert final["content"][0]["name"] == "Bash"  # exact case


def test_bug_no_delta_sent_to_a_block_of_another_type():
    # every kind in one delta, then kinds alternating: each delta goes to a block of its type
    call = {"index": 0, "id": "call_1", "function": {"name": "Read", "arguments": "{}"}}
    events, out = o2a(
        chunk({"reasoning_content": "r1", "content": "t1", "tool_calls": [call]}),
        chunk({"reasoning_content": "r2"}),
        chunk({"content": "t2"}),
        chunk({}, "tool_calls", USAGE),
    )
    check_anthropic_events(out)  # asserts delta type == block type
    assert [b["type"] for b in blocks(events)] == ["thinking", "text", "tool_use", "thinking", "text"]


def test_bug_single_message_start():
    # Kimi may repeat `role` in deltas; some relays resend the first chunk.
    events, out = o2a(chunk({"role": "assistant", "content": ""}), chunk({"role": "assistant", "content": "a"}),
                      chunk({"role": "assistant", "content": "b"}), chunk({}, "stop", USAGE))
    check_anthropic_events(out)
    assert [e["type"] for e in events].count("message_start") == 1


def test_bug_input_not_empty_when_arguments_came_before_name():
    early = [{"index": 0, "function": {"arguments": '{"comm'}}]
    late = [{"index": 0, "id": "functions.Bash:0", "type": "function", "function": {"name": "Bash", "arguments": 'and": "pwd"}'}}]
    events, out = o2a(chunk({"tool_calls": early}), chunk({"tool_calls": late}), chunk({}, "tool_calls", USAGE))
    check_anthropic_events(out)
    final = anthropic_final(out)
    assert final["content"][0]["input"] == {"command": "pwd"}


def test_arguments_of_a_call_whose_id_never_came_are_delivered():
    events, out = o2a(chunk({"tool_calls": [{"index": 0, "function": {"name": "Bash", "arguments": '{"a": 1}'}}]}),
                      chunk({}, "tool_calls", USAGE))
    check_anthropic_events(out)
    assert anthropic_final(out)["content"][0]["input"] == {"a": 1}


def test_bug_no_empty_text_block_from_empty_content():
    events, out = o2a(chunk({"role": "assistant", "content": ""}), chunk({"content": ""}),
                      chunk({"reasoning_content": "x", "content": ""}), chunk({"content": ""}), chunk({}, "stop", USAGE))
    check_anthropic_events(out)
    assert [b["type"] for b in blocks(events)] == ["thinking"]


def test_bug_text_after_a_tool_call_not_dropped():
    call = {"index": 0, "id": "functions.Bash:0", "function": {"name": "Bash", "arguments": "{}"}}
    events, out = o2a(chunk({"content": "before"}), chunk({"tool_calls": [call]}), chunk({"content": "after"}),
                      chunk({}, "tool_calls", USAGE))
    check_anthropic_events(out)
    final = anthropic_final(out)
    assert [(b["type"], b.get("text")) for b in final["content"]] == [("text", "before"), ("tool_use", None), ("text", "after")]


def test_parallel_tool_calls_become_blocks_in_order():
    calls = [{"index": 0, "id": "functions.Read:0", "function": {"name": "Read", "arguments": '{"p": 1}'}},
             {"index": 1, "id": "functions.Grep:1", "function": {"name": "Grep", "arguments": ""}}]
    events, out = o2a(chunk({"tool_calls": calls}), chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"q": 2}'}}]}),
                      chunk({}, "tool_calls", USAGE))
    check_anthropic_events(out)
    final = anthropic_final(out)
    assert [(b["name"], b["input"]) for b in final["content"]] == [("Read", {"p": 1}), ("Grep", {"q": 2})]
    assert final["content"][0]["id"] != final["content"][1]["id"]


def test_interleaved_arguments_for_a_finished_call_are_an_error_not_a_silent_loss():
    a = {"index": 0, "id": "c0", "function": {"name": "A", "arguments": "{"}}
    b = {"index": 1, "id": "c1", "function": {"name": "B", "arguments": "{}"}}
    events, out = o2a(chunk({"tool_calls": [a]}), chunk({"tool_calls": [b]}), chunk({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}))
    check_anthropic_events(out, complete=False)


def test_comment_only_events_are_ignored():
    events, out = o2a(": ping\n\n", chunk({"content": "x"}), ": keep-alive\n\n", chunk({}, "stop", USAGE))
    check_anthropic_events(out)


def test_done_without_finish_reason_completes_and_done_is_never_forwarded():
    events, out = o2a(chunk({"content": "x"}), "data: [DONE]\n\n")
    check_anthropic_events(out)
    assert events[-2]["delta"]["stop_reason"] == "end_turn"


def test_stop_sequence_reported_when_known():
    body = json.loads(chunk({}, "stop", USAGE)[6:])
    body["choices"][0]["stop_reason"] = "###"  # vLLM reports the matched stop string
    events, out = o2a(chunk({"content": "x"}), f"data: {json.dumps(body)}\n\n")
    assert events[-2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "###"}


# ---------------------------------------------------------------- early end and errors, OpenAI -> Anthropic


def test_openai_upstream_cut_before_finish_is_an_error_event():
    events, out = o2a(chunk({"content": "partial"}), close=True)
    check_anthropic_events(out, complete=False)
    assert events[-1]["error"]["type"] == "api_error"
    with pytest.raises(anthropic.APIStatusError):
        anthropic_final(out)


def test_openai_upstream_cut_before_any_chunk_is_an_error_event():
    events, out = o2a(close=True)
    assert [e["type"] for e in events] == ["error"]


@pytest.mark.parametrize(("err", "kind"), [
    ({"message": "overloaded", "type": "engine_overloaded_error"}, "overloaded_error"),
    ({"message": "slow down", "type": "rate_limit_reached_error"}, "rate_limit_error"),
    ({"message": "bad", "type": "invalid_request_error"}, "invalid_request_error"),
    ({"message": "boom", "code": 500}, "api_error"),
])
def test_openai_upstream_error_chunk_becomes_anthropic_error_event(err, kind):
    events, out = o2a(chunk({"content": "partial"}), f"data: {json.dumps({'error': err})}\n\n", chunk({"content": "ignored"}))
    check_anthropic_events(out, complete=False)
    assert events[-1] == {"type": "error", "error": {"type": kind, "message": err["message"]}}
    with pytest.raises(anthropic.APIStatusError, match=err["message"]):
        anthropic_final(out)


def test_openai_stream_feed_after_finish_is_ignored():
    t = OpenAIToAnthropicStream(MODEL, TURN)
    for e in SSEParser().feed((chunk({"content": "x"}) + chunk({}, "stop", USAGE)).encode()):
        t.feed(e)
    assert t.feed(SSEEvent(None, "[DONE]", b"", True)) == [] and t.close() == []


# ---------------------------------------------------------------- Anthropic -> OpenAI specifics


def test_anthropic_tool_use_without_argument_deltas_gets_json_arguments():
    out = a2o(MSG_START,
              {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_a", "name": "Now", "input": {}}},
              {"type": "content_block_stop", "index": 0},
              {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}},
              {"type": "message_stop"})
    check_openai_chunks(out, True)
    final = openai_final(out)
    assert final["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert final["choices"][0]["finish_reason"] == "tool_calls"


def test_anthropic_invalid_tool_id_sanitised_and_sent_once():
    out = a2o(MSG_START,
              {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "functions.Bash:0", "name": "Bash", "input": {}}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"c":'}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": '"x"}'}},
              {"type": "content_block_stop", "index": 0},
              {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}},
              {"type": "message_stop"}, include_usage=False)
    check_openai_chunks(out, False)
    call = openai_final(out)["choices"][0]["message"]["tool_calls"][0]
    assert call["id"].startswith("toolu_functions_Bash_0_") and call["function"] == {"name": "Bash", "arguments": '{"c":"x"}'}


def test_anthropic_error_event_becomes_error_chunk_without_done():
    out = a2o(MSG_START, {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "par"}},
              {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    chunks = check_openai_chunks(out, True, complete=False)
    assert chunks[-1]["error"]["message"] == "Overloaded"
    with pytest.raises(openai.APIError, match="Overloaded"):
        openai_final(out)


def test_anthropic_upstream_cut_before_message_stop_is_error_chunk():
    out = a2o(MSG_START, {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "par"}},
              {"type": "content_block_stop", "index": 0},
              {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}})
    check_openai_chunks(out, True, complete=False)
    with pytest.raises(openai.APIError):
        openai_final(out)


def test_anthropic_text_given_in_content_block_start_is_kept():
    out = a2o(MSG_START, {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "Hel"}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
              {"type": "content_block_stop", "index": 0}, {"type": "message_stop"})
    assert openai_final(out)["choices"][0]["message"]["content"] == "Hello"


def test_anthropic_pings_and_signatures_produce_nothing():
    t = AnthropicToOpenAIStream(MODEL, True)
    parser = SSEParser()
    t.feed(parser.feed(a_event(MSG_START).encode())[0])
    for p in ({"type": "ping"}, {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "s"}}):
        assert t.feed(parser.feed(a_event(p).encode())[0]) == []


@pytest.mark.parametrize(("stop", "finish"), [("end_turn", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
                                              ("stop_sequence", "stop"), ("refusal", "content_filter"),
                                              ("pause_turn", "stop"), ("model_context_window_exceeded", "length")])
def test_anthropic_stop_reasons_map_to_finish_reasons(stop, finish):
    out = a2o(MSG_START, {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 1}}, {"type": "message_stop"})
    assert openai_final(out)["choices"][0]["finish_reason"] == finish
