"""The cheap paths of the stream path give what the full ones gave: a delta encoded into
its block's pre-encoded bytes, a tap reading a plain event without the exact parse, and
`jsonfast.loads_unchecked`. Each is checked against the full way, and for not paying
the per-event cost it exists to avoid."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawproxy.core import jsonfast
from rawproxy.core.reasoning import Reasoning
from rawproxy.core.sse import SSEEvent, encode_event
from rawproxy.core.tap import AnthropicTap, OpenAITap
from rawproxy.translate import streams
from rawproxy.translate.streams import AnthropicToOpenAIStream, OpenAIToAnthropicStream

KEY = "k" * 20
# Strings that JSON escapes (quotes, backslashes, control characters), that it does not
# (U+2028, non-ASCII, emoji), and SSE's own line breaks.
hard_texts = st.text(st.characters(codec="utf-8") | st.sampled_from(list('"\\\n\r\t\x00\x1f\u2028é😀')), min_size=1)


def full_event(doc: dict) -> bytes:
    """An event written the whole way, as the translators wrote every event before."""
    return encode_event(json.dumps(doc, ensure_ascii=False), doc.get("type"))


def openai_chunk(delta: dict, **extra) -> SSEEvent:
    data = json.dumps({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "kimi",
                       "choices": [{"index": 0, "delta": delta, "finish_reason": None, **extra}]})
    return SSEEvent(None, data, encode_event(data), True)


def anthropic_event(doc: dict) -> SSEEvent:
    data = json.dumps(doc)
    return SSEEvent(doc["type"], data, encode_event(data, doc["type"]), True)


def block_delta(index: int, delta: dict) -> SSEEvent:
    return anthropic_event({"type": "content_block_delta", "index": index, "delta": delta})


def block_start(index: int, block: dict) -> SSEEvent:
    return anthropic_event({"type": "content_block_start", "index": index, "content_block": block})


MESSAGE_START = anthropic_event({"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 1}}})


# ---------------------------------------------------------------- translators


@settings(max_examples=150, deadline=None)
@given(st.lists(hard_texts, min_size=1, max_size=4), st.lists(hard_texts, min_size=1, max_size=4),
       st.lists(hard_texts, min_size=1, max_size=4))
def test_openai_deltas_become_the_bytes_of_the_whole_event(reasoning, text, args):
    tr = OpenAIToAnthropicStream("m", KEY)
    tr.feed(openai_chunk({"role": "assistant"}))
    for kind, name, delta_type, index, pieces in (("reasoning_content", "thinking", "thinking_delta", 0, reasoning),
                                                  ("content", "text", "text_delta", 1, text)):
        for i, piece in enumerate(pieces):
            out = tr.feed(openai_chunk({kind: piece}))
            assert out[-1] == full_event({"type": "content_block_delta", "index": index,
                                          "delta": {"type": delta_type, name: piece}})
            assert len(out) == (1 if i else 2 + (index > 0) * 2)  # later deltas: no block change
    tr.feed(openai_chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}]}))
    for piece in args:
        out = tr.feed(openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        assert out == [full_event({"type": "content_block_delta", "index": 2,
                                   "delta": {"type": "input_json_delta", "partial_json": piece}})]


def whole_chunk(tr: AnthropicToOpenAIStream, delta: dict) -> bytes:
    doc = {"id": tr._id, "object": "chat.completion.chunk", "created": tr._created, "model": tr.model,
           "choices": [{"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}]}
    return encode_event(json.dumps(doc, ensure_ascii=False))


@settings(max_examples=150, deadline=None)
@given(st.lists(hard_texts, min_size=1, max_size=4), st.lists(hard_texts, min_size=1, max_size=4),
       st.lists(hard_texts, min_size=1, max_size=4), hard_texts)
def test_anthropic_deltas_become_the_bytes_of_the_whole_chunk(thinking, text, args, model):
    tr = AnthropicToOpenAIStream(model, include_usage=True)
    tr.feed(MESSAGE_START)
    for index, kind, field_name, pieces in ((0, "thinking", "reasoning_content", thinking),
                                            (1, "text", "content", text), (2, "text", "content", text)):
        tr.feed(block_start(index, {"type": kind, kind: ""}))
        for i, piece in enumerate(pieces):
            joined = "\n\n" + piece if index == 2 and i == 0 else piece  # a second text block joins with a blank line
            assert tr.feed(block_delta(index, {"type": f"{kind}_delta", kind: piece})) == [
                whole_chunk(tr, {field_name: joined})]
    tr.feed(block_start(3, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}))
    for piece in args:
        assert tr.feed(block_delta(3, {"type": "input_json_delta", "partial_json": piece})) == [
            whole_chunk(tr, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})]


def test_a_delta_that_is_not_a_string_is_relayed_as_the_json_it_is():
    tr = AnthropicToOpenAIStream("m", include_usage=False)
    tr.feed(MESSAGE_START)
    tr.feed(block_start(0, {"type": "text", "text": ""}))
    assert tr.feed(block_delta(0, {"type": "text_delta", "text": [1, "a"]})) == [whole_chunk(tr, {"content": [1, "a"]})]
    tr.feed(block_start(1, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}))
    assert tr.feed(block_delta(1, {"type": "input_json_delta", "partial_json": {"a": 1}})) == [
        whole_chunk(tr, {"tool_calls": [{"index": 0, "function": {"arguments": {"a": 1}}}]})]


def whole_encoding_error(doc: dict) -> str:
    with pytest.raises(UnicodeEncodeError) as caught:
        full_event(doc)
    return str(caught.value)


def test_a_lone_surrogate_raises_what_encoding_the_whole_event_raises():
    # Valid JSON (an escaped lone surrogate) that no UTF-8 can carry: the relay reports
    # the event as malformed, with the error the whole event's encoding gives.
    tr = OpenAIToAnthropicStream("m", KEY)
    tr.feed(openai_chunk({"content": "a"}))
    with pytest.raises(UnicodeEncodeError) as caught:
        tr.feed(openai_chunk({"content": "b\ud800"}))
    assert str(caught.value) == whole_encoding_error(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "b\ud800"}})

    back = AnthropicToOpenAIStream("m", include_usage=False)
    back.feed(MESSAGE_START)
    back.feed(block_start(0, {"type": "text", "text": ""}))
    back.feed(block_delta(0, {"type": "text_delta", "text": "a"}))
    with pytest.raises(UnicodeEncodeError) as caught:
        back.feed(block_delta(0, {"type": "text_delta", "text": "b\ud800"}))
    assert str(caught.value) == whole_encoding_error(
        {"id": back._id, "object": "chat.completion.chunk", "created": back._created, "model": "m",
         "choices": [{"index": 0, "delta": {"content": "b\ud800"}, "finish_reason": None, "logprobs": None}]})


def test_deltas_after_the_first_of_a_block_are_not_serialised_whole(monkeypatch):
    calls = []
    real = streams._dumps
    monkeypatch.setattr(streams, "_dumps", lambda doc: calls.append(doc) or real(doc))
    tr = OpenAIToAnthropicStream("m", KEY)
    tr.feed(openai_chunk({"content": "a"}))
    calls.clear()
    for piece in "bcdef":
        tr.feed(openai_chunk({"content": piece}))
    assert calls == []
    back = AnthropicToOpenAIStream("m", include_usage=False)
    back.feed(MESSAGE_START)
    back.feed(block_start(0, {"type": "text", "text": ""}))
    back.feed(block_delta(0, {"type": "text_delta", "text": "a"}))
    calls.clear()
    for piece in "bcdef":
        back.feed(block_delta(0, {"type": "text_delta", "text": piece}))
    assert calls == []


# ---------------------------------------------------------------- taps


def thinking_stream(*deltas: SSEEvent) -> list[SSEEvent]:
    return [MESSAGE_START, block_start(0, {"type": "thinking", "thinking": "", "signature": ""}), *deltas]


def test_plain_deltas_and_chunks_are_read_without_the_exact_parse(monkeypatch):
    exact = []
    real = jsonfast.loads
    monkeypatch.setattr(jsonfast, "loads", lambda data: exact.append(data) or real(data))
    tap = AnthropicTap(KEY, "toolu")
    for ev in thinking_stream(*(block_delta(0, {"type": "thinking_delta", "thinking": t}) for t in "abc")):
        tap.event(ev)
    assert tap.parts == ["a", "b", "c"] and not [data for data in exact if "thinking_delta" in data]
    otap = OpenAITap(KEY, "call")
    exact.clear()
    for t in "abc":
        otap.event(openai_chunk({"reasoning_content": t}))
    otap.event(openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}))
    assert otap.parts == ["a", "b", "c"] and exact == []


def test_anthropic_tap_collects_thinking_as_the_exact_parse_does():
    tap = AnthropicTap(KEY, "toolu")
    events = thinking_stream(
        block_delta(0, {"type": "thinking_delta", "thinking": "a\u2028\ud83d\ude00"}),
        block_delta(0, {"type": "thinking_delta", "thinking": None}),  # kept as "" by the exact reading
        SSEEvent("content_block_delta", '{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta",'
                                        '"thinking":"b","n":123456789012345678901234}}', b"", True),
        block_delta(0, {"type": "signature_delta", "signature": "SIG"}),
        block_delta(0, {"type": "citations_delta", "x": 1}),
        block_delta(0, {}),
        anthropic_event({"type": "content_block_stop", "index": 0}),
        block_start(1, {"type": "tool_use", "id": "x", "name": "f", "input": {}}),
    )
    for ev in events:
        assert tap.event(ev) is ev or ev.event == "content_block_start"
    assert tap.parts == ["a\u2028\U0001f600", "", "b"]
    assert tap.remembered() == Reasoning("a\u2028\U0001f600b", "SIG")


MALFORMED_THINKING = [
    '{"type":"content_block_delta","index":0,"delta":["thinking_delta"]}',
    '{"type":"content_block_delta","index":0,"delta":"thinking"}',
    '{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"a"}',
    '["content_block_delta"]',
    '{"type":"content_block_delta","delta":' + "[" * 5000 + "]" * 5000 + "}",
    '{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"\\x"}}',
]


def outcome(read) -> str:
    try:
        read()
    except (ValueError, RecursionError, TypeError, AttributeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "read"


@pytest.mark.parametrize("data", MALFORMED_THINKING)
def test_a_malformed_thinking_delta_raises_at_its_event_as_the_exact_parse_does(data):
    tap = AnthropicTap(KEY, "toolu")
    for ev in thinking_stream():
        tap.event(ev)

    def exact() -> None:
        (jsonfast.loads(data).get("delta") or {}).get("type")

    assert outcome(lambda: tap.event(SSEEvent("content_block_delta", data, b"", True))) == outcome(exact) != "read"


MALFORMED_CHUNKS = [
    '{"choices": "reasoning_content"}',
    '{"choices": [{"index": 0, "delta": ["reasoning_content"]}]}',
    '{"choices": [{"index": 0, "delta": {"reasoning_content": "a"}}]',
    '{"choices": 123456789012345678901234, "reasoning": 1}',
    '{"choices": [{"index": 0, "delta": {"reasoning_content": "a", "tool_calls": 7}}]}',
    '{"choices": [{"index": 0, "delta": {"reasoning": "a", "tool_calls": ["x"]}}]}',
]


@pytest.mark.parametrize("data", MALFORMED_CHUNKS)
def test_a_malformed_reasoning_chunk_raises_as_the_exact_parse_does(data):
    def exact() -> None:
        for choice in jsonfast.loads(data).get("choices") or ():
            delta = choice.get("delta") or {}
            delta.get("reasoning_content")
            for call in delta.get("tool_calls") or ():
                call.get("id")

    got = outcome(lambda: OpenAITap(KEY, "call").event(SSEEvent(None, data, b"", True)))
    assert got == outcome(exact) != "read"


def test_openai_tap_reads_ids_and_their_indexes_exactly():
    tap = OpenAITap(KEY, "call")
    tap.event(openai_chunk({"reasoning_content": "r"}))
    tap.event(openai_chunk({"reasoning": "s", "content": "t"}))
    big = 2**70  # past 64 bits: a float from the unchecked parse, an int here
    out = tap.event(openai_chunk({"tool_calls": [{"index": big, "id": "functions.f:0", "function": {"arguments": ""}}]}))
    call = json.loads(out.data)["choices"][0]["delta"]["tool_calls"][0]
    assert call["index"] == big and call["id"] != "functions.f:0"
    assert tap.tool_calls == 1 and tap.remembered() == Reasoning("rs", None)


# ---------------------------------------------------------------- jsonfast.loads_unchecked

_leaves = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text() | st.floats(allow_nan=False,
                                                                                                 allow_infinity=False)
_docs = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                     max_leaves=30)


@settings(max_examples=200, deadline=None)
@given(_docs, st.booleans())
def test_unchecked_reads_what_loads_reads_within_64_bit_integers(value, ascii_only):
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert repr(jsonfast.loads_unchecked(text)) == repr(jsonfast.loads(text))


@pytest.mark.parametrize("text", [
    '{"a": NaN}', "[1e400, -Infinity]", '"\\ud800"', "\ud800", "{bad", "", "[1,]", "[" * 5000 + "]" * 5000,
    '{"a": 1, "a": 2}',
])
def test_unchecked_judges_unusual_input_as_loads_does(text):
    def judged(parse) -> str:
        try:
            return repr(parse(text))
        except RecursionError:
            return "RecursionError"
        except ValueError as exc:
            return f"{type(exc).__name__}: {exc}"
    assert judged(jsonfast.loads_unchecked) == judged(jsonfast.loads)


def test_unchecked_is_the_stdlib_without_orjson(monkeypatch):
    monkeypatch.setattr(jsonfast, "_orjson", None)
    assert jsonfast.loads_unchecked("[18446744073709551616]") == [2**64]


def test_a_thinking_delta_whose_text_is_not_a_string_is_malformed():
    """Found as malformed when it arrives (the relay sends an error event then), not later
    when the turn's reasoning is joined for the store (a TypeError outside the relay's
    malformed-event handling, which cut the stream without an error event)."""
    tap = AnthropicTap(KEY, "toolu")
    events = list(thinking_stream(block_delta(0, {"type": "thinking_delta", "thinking": 12345678901234567890123})))
    with pytest.raises(TypeError, match="not a string"):
        for ev in events:
            tap.event(ev)
