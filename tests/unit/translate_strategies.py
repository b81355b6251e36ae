"""Hypothesis strategies and harness for the translate/ tests.

An "answer" is what an upstream model said: reasoning, text, tool calls, usage, finish.
It is rendered three ways: as a non-streaming body, as the upstream's SSE bytes (OpenAI
chunks in Kimi's shape, or Anthropic events), and the client side is accumulated by the
real SDKs (anthropic / openai over an httpx2 MockTransport: both SDKs use httpx2).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx2
import openai
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState

from rawproxy.core.ids import tool_call_id
from rawproxy.core.sse import SSEParser

TURN = "abcdefghij0123456789"
MODEL = "client-model"

# ---------------------------------------------------------------- strategies

# Text with the characters that break naive SSE/JSON handling: newlines, CR, unicode, quotes.
_alphabet = st.sampled_from(list("ab xyz\n\r\t\"\\{}:,é✓😀") + ["data: ", "\n\n", "[DONE]"])
texts = st.lists(_alphabet, max_size=12).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "cmd", "ü"]), inner, max_size=3),
    max_leaves=6,
)
tool_inputs = st.dictionaries(st.sampled_from(["command", "path", "n", "flag", "nested"]), json_values, max_size=4)
tool_names = st.sampled_from(["Bash", "read_file", "WebFetch", "mcp__srv__Tool-x"])


@dataclass
class Call:
    id: str
    name: str
    input: dict


@dataclass
class Answer:
    reasoning: str
    text: str
    calls: list[Call]
    prompt: int
    completion: int
    cached: int
    finish: str
    upstream_id: str = "cmpl-7f3a"
    extra: dict = field(default_factory=dict)


@st.composite
def answers(draw: Any) -> Answer:
    n = draw(st.integers(0, 3))
    kimi_ids = draw(st.booleans())  # Kimi's raw ids, or ids the proxy already issued
    calls = [
        Call(f"functions.{name}:{k}" if kimi_ids else tool_call_id(TURN, k, "call"), name, draw(tool_inputs))
        for k, name in enumerate(draw(st.lists(tool_names, min_size=n, max_size=n)))
    ]
    prompt = draw(st.integers(0, 100_000))
    finish = "tool_calls" if calls else draw(st.sampled_from(["stop", "length", "content_filter"]))
    return Answer(
        reasoning=draw(texts),
        text=draw(texts),
        calls=calls,
        prompt=prompt,
        completion=draw(st.integers(0, 50_000)),
        cached=draw(st.integers(0, prompt)),
        finish=finish,
    )


def pieces(draw: Any, s: str) -> list[str]:
    """Split a string at random points (possibly into empty pieces)."""
    if not s:
        return []
    cuts = sorted(draw(st.lists(st.integers(0, len(s)), max_size=4)))
    bounds = [0, *cuts, len(s)]
    return [s[a:b] for a, b in zip(bounds, bounds[1:])]


def cut(draw: Any, data: bytes) -> list[bytes]:
    """The bytes as TCP would deliver them: random chunk boundaries, even mid-UTF-8."""
    cuts = sorted(set(draw(st.lists(st.integers(1, max(len(data) - 1, 1)), max_size=12))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if a < b]


# ---------------------------------------------------------------- OpenAI side (Kimi shape)


def openai_usage(a: Answer, style: str) -> dict:
    usage = {"prompt_tokens": a.prompt, "completion_tokens": a.completion, "total_tokens": a.prompt + a.completion}
    if style == "kimi":
        usage["cached_tokens"] = a.cached  # Kimi's top-level field
    else:
        usage["prompt_tokens_details"] = {"cached_tokens": a.cached}
    return usage


def openai_body(a: Answer) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": a.text or None}
    if a.reasoning:
        message["reasoning_content"] = a.reasoning
    if a.calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.input)}} for c in a.calls
        ]
    return {
        "id": a.upstream_id, "object": "chat.completion", "created": 1, "model": MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": a.finish}],
        "usage": openai_usage(a, "standard"),
    }


@st.composite
def openai_stream(draw: Any, a: Answer) -> bytes:
    """Kimi-shaped upstream bytes for an answer (docs/kimi.md section 3)."""
    head = {"id": a.upstream_id, "object": "chat.completion.chunk", "created": 1, "model": "kimi-k2.6"}

    def chunk(delta: dict, finish: str | None = None, **extra: Any) -> dict:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, **extra}
        return {**head, "choices": [choice]}

    chunks = [chunk({"role": "assistant", "content": ""})]
    for p in pieces(draw, a.reasoning):
        chunks.append(chunk({"reasoning_content": p}))
        if draw(st.booleans()):
            chunks.append(chunk({"content": ""}))  # empty content must not open a block
    for p in pieces(draw, a.text):
        chunks.append(chunk({"content": p}))
    for k, c in enumerate(a.calls):
        args = pieces(draw, json.dumps(c.input))
        if args and draw(st.booleans()):  # a fragment before the id and name ("input: {}" bug)
            chunks.append(chunk({"tool_calls": [{"index": k, "function": {"arguments": args.pop(0)}}]}))
        first = {"index": k, "id": c.id, "type": "function", "function": {"name": c.name, "arguments": args[0] if args else ""}}
        chunks.append(chunk({"tool_calls": [first]}))
        for p in args[1:]:
            chunks.append(chunk({"tool_calls": [{"index": k, "function": {"arguments": p}}]}))
    style = draw(st.sampled_from(["in_choice", "trailing", "both"]))
    usage = openai_usage(a, draw(st.sampled_from(["kimi", "standard"])))
    last = chunk({}, a.finish, **({"usage": usage} if style != "trailing" else {}))
    chunks.append(last)
    if style != "in_choice":
        chunks.append({**head, "choices": [], "usage": usage})
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    text = "".join(f"data: {json.dumps(c, ensure_ascii=draw(st.booleans()))}{eol}{eol}" for c in chunks)
    if draw(st.booleans()):
        text = f": keep-alive{eol}{eol}" + text
    return (text + f"data: [DONE]{eol}{eol}").encode()


def before_finish(data: bytes, marker: bytes) -> int:
    """Offset where the event holding `marker` starts: cutting there loses the ending."""
    return data.rfind(b"data: ", 0, data.find(marker))


# ---------------------------------------------------------------- Anthropic side


@dataclass
class AAnswer:
    blocks: list[dict]
    stop: str
    usage: dict
    id: str = "msg_01XYZ"


@st.composite
def anthropic_answers(draw: Any) -> AAnswer:
    blocks: list[dict] = []
    if draw(st.booleans()):
        blocks.append({"type": "thinking", "thinking": draw(texts), "signature": "upstream-sig-" + "x" * draw(st.integers(0, 40))})
    k = 0
    for kind in draw(st.lists(st.sampled_from(["text", "tool_use", "thinking"]), max_size=4)):
        if kind == "tool_use":
            blocks.append({"type": "tool_use", "id": tool_call_id(TURN, k, "toolu"), "name": draw(tool_names), "input": draw(tool_inputs)})
            k += 1
        elif kind == "thinking":
            blocks.append({"type": "thinking", "thinking": draw(texts), "signature": "sig"})
        else:
            blocks.append({"type": "text", "text": draw(texts)})
    stop = "tool_use" if k else draw(st.sampled_from(["end_turn", "max_tokens", "stop_sequence", "refusal", "pause_turn"]))
    usage = {
        "input_tokens": draw(st.integers(0, 10_000)),
        "output_tokens": draw(st.integers(0, 10_000)),
        "cache_creation_input_tokens": draw(st.integers(0, 1000)),
        "cache_read_input_tokens": draw(st.integers(0, 1000)),
    }
    return AAnswer(blocks, stop, usage)


def anthropic_body(a: AAnswer) -> dict:
    return {"id": a.id, "type": "message", "role": "assistant", "model": MODEL, "content": a.blocks,
            "stop_reason": a.stop, "stop_sequence": None, "usage": a.usage}


@st.composite
def anthropic_stream(draw: Any, a: AAnswer) -> bytes:
    events: list[dict] = []
    start_usage = {**a.usage, "output_tokens": 1}
    events.append({"type": "message_start", "message": {**anthropic_body(a), "content": [], "stop_reason": None, "usage": start_usage}})
    for i, b in enumerate(a.blocks):
        if draw(st.booleans()):
            events.append({"type": "ping"})
        if b["type"] == "thinking":
            events.append({"type": "content_block_start", "index": i, "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
            for p in pieces(draw, b["thinking"]):
                events.append({"type": "content_block_delta", "index": i, "delta": {"type": "thinking_delta", "thinking": p}})
            events.append({"type": "content_block_delta", "index": i, "delta": {"type": "signature_delta", "signature": b["signature"]}})
        elif b["type"] == "text":
            events.append({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}})
            for p in pieces(draw, b["text"]):
                events.append({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": p}})
        else:
            events.append({"type": "content_block_start", "index": i, "content_block": {**b, "input": {}}})
            args = json.dumps(b["input"])
            for p in [""] + pieces(draw, args):  # Anthropic opens with an empty partial_json
                events.append({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": p}})
        events.append({"type": "content_block_stop", "index": i})
    events.append({"type": "message_delta", "delta": {"stop_reason": a.stop, "stop_sequence": None},
                   "usage": {"output_tokens": a.usage["output_tokens"]}})
    events.append({"type": "message_stop"})
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


# ---------------------------------------------------------------- running a translator


def run(translator: Any, chunks: list[bytes]) -> list[bytes]:
    """Upstream bytes, chunked like TCP -> SSEParser -> translator -> client event bytes."""
    parser = SSEParser()
    out: list[bytes] = []
    for c in chunks:
        for event in parser.feed(c):
            out += translator.feed(event)
    parser.close()
    out += translator.close()
    return out


def parse_client(out: list[bytes]) -> list[tuple[str | None, str]]:
    """Each output item must be exactly one SSE event."""
    events = []
    for item in out:
        parsed = SSEParser().feed(item)
        assert len(parsed) == 1 and parsed[0].raw == item, item
        events.append((parsed[0].event, parsed[0].data))
    return events


# ---------------------------------------------------------------- the real SDKs

_body = {"current": b""}


def _handler(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=_body["current"])


_http = httpx2.Client(transport=httpx2.MockTransport(_handler))
ANTHROPIC = anthropic.Anthropic(api_key="test", base_url="http://test", http_client=_http, max_retries=0)
OPENAI = openai.OpenAI(api_key="test", base_url="http://test/v1", http_client=_http, max_retries=0)


def anthropic_final(out: list[bytes]) -> dict:
    _body["current"] = b"".join(out)
    with ANTHROPIC.messages.stream(model=MODEL, max_tokens=1, messages=[{"role": "user", "content": "hi"}]) as s:
        return s.get_final_message().model_dump(mode="json", exclude_none=True)


def openai_final(out: list[bytes]) -> dict:
    _body["current"] = b"".join(out)
    state = ChatCompletionStreamState()
    for chunk in OPENAI.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True):
        state.handle_chunk(chunk)
    # the accumulated snapshot: get_final_completion() also parses, and refuses `length`
    return state.current_completion_snapshot.model_dump(mode="json", exclude_none=True)


def as_anthropic_sdk(message: dict) -> dict:
    """A non-streaming Anthropic body as the SDK would hand it to its user."""
    return anthropic.types.Message.model_validate(message).model_dump(mode="json", exclude_none=True)


def openai_essence(completion: dict) -> dict:
    """What an OpenAI client reads from a completion (created/index/parsed fields aside)."""
    choice = completion["choices"][0]
    msg = choice["message"]
    return {
        "id": completion["id"],
        "model": completion["model"],
        "finish_reason": choice["finish_reason"],
        "content": msg.get("content"),
        "reasoning_content": msg.get("reasoning_content"),
        "tool_calls": [
            (c["id"], c["type"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in msg.get("tool_calls") or []
        ],
        "usage": {k: v for k, v in (completion.get("usage") or {}).items() if v is not None} or None,
    }


# ---------------------------------------------------------------- protocol invariants


def check_anthropic_events(out: list[bytes], complete: bool = True) -> list[dict]:
    """docs/protocols.md section 1's client-enforced invariants; returns the event payloads."""
    events = parse_client(out)
    datas = []
    for name, data in events:
        assert data != "[DONE]", "never [DONE] to an Anthropic client"
        payload = json.loads(data)
        assert name == payload["type"], "every event has an event: line equal to data.type"
        datas.append(payload)
    types = [d["type"] for d in datas]
    if not complete:
        assert "message_stop" not in types and types[-1] == "error", types
        return datas
    assert types[0] == "message_start" and types.count("message_start") == 1
    assert types[-1] == "message_stop" and types.count("message_stop") == 1
    assert types[-2] == "message_delta" and types.count("message_delta") == 1
    assert "error" not in types
    open_index, open_type, next_index = None, None, 0
    last_delta: dict | None = None
    json_parts: dict[int, list[str]] = {}
    for d in datas[1:-2]:
        if d["type"] == "content_block_start":
            assert open_index is None, "one block open at a time"
            assert d["index"] == next_index, "indexes 0, 1, 2... in start order"
            open_index, open_type, next_index = d["index"], d["content_block"]["type"], next_index + 1
            if open_type == "tool_use":
                assert d["content_block"]["id"] and d["content_block"]["name"]
                assert all(c.isalnum() or c in "_-" for c in d["content_block"]["id"])
            last_delta = None
        elif d["type"] == "content_block_delta":
            assert d["index"] == open_index, "delta to the open block"
            kind = d["delta"]["type"]
            allowed = {"thinking": {"thinking_delta", "signature_delta"}, "text": {"text_delta"}, "tool_use": {"input_json_delta"}}
            assert kind in allowed[open_type], f"{kind} sent to a {open_type} block"
            if last_delta is not None and last_delta["type"] == "signature_delta":
                raise AssertionError("nothing after a signature_delta but the block's stop")
            if kind in ("text_delta", "thinking_delta"):
                assert d["delta"][kind.split("_")[0]], "no empty deltas"
            if kind == "input_json_delta":
                json_parts.setdefault(open_index, []).append(d["delta"]["partial_json"])
            last_delta = d["delta"]
        elif d["type"] == "content_block_stop":
            assert d["index"] == open_index
            if open_type == "thinking":
                assert last_delta and last_delta["type"] == "signature_delta", "signature_delta just before the stop"
            if open_type == "text":
                assert last_delta is not None, "no empty text blocks"
            if open_type == "tool_use":
                parsed = json.loads("".join(json_parts.get(open_index, [])) or "{}")
                assert isinstance(parsed, dict)
            open_index = None
        else:
            assert d["type"] == "ping", d
    assert open_index is None, "every block closed before message_delta"
    return datas


def check_openai_chunks(out: list[bytes], include_usage: bool, complete: bool = True) -> list[dict]:
    events = parse_client(out)
    assert all(name is None for name, _ in events), "no event: lines to OpenAI clients"
    datas = [d for _, d in events]
    if not complete:
        assert "[DONE]" not in datas
        last = json.loads(datas[-1])
        assert set(last) == {"error"} and last["error"]["message"] and last["error"]["type"]
        return [json.loads(d) for d in datas]
    assert datas[-1] == "[DONE]" and datas.count("[DONE]") == 1
    chunks = [json.loads(d) for d in datas[:-1]]
    for c in chunks:
        assert c["object"] == "chat.completion.chunk" and c["id"] and c["model"] == MODEL and isinstance(c["created"], int)
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant"
    choice_chunks = [c for c in chunks if c["choices"]]
    finishes = [c["choices"][0]["finish_reason"] for c in choice_chunks]
    assert finishes[-1] and not any(finishes[:-1]), "finish_reason only in the last choice chunk"
    usage_chunks = [c for c in chunks if not c["choices"]]
    if include_usage:
        assert len(usage_chunks) == 1 and chunks[-1] is usage_chunks[0] and chunks[-1]["usage"]
    else:
        assert not usage_chunks
    seen: set[int] = set()
    for c in choice_chunks:
        for tc in c["choices"][0]["delta"].get("tool_calls") or []:
            first = tc["index"] not in seen
            seen.add(tc["index"])
            assert ("id" in tc) == first and ("name" in tc.get("function", {})) == first, "id/name once per index"
    assert seen == set(range(len(seen))), "tool indexes 0, 1, 2..."
    return chunks


def chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None,
          choices: bool = True) -> str:
    """One Kimi-shaped chat.completion.chunk SSE event, for the named stream tests."""
    body: dict = {"id": "cmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "kimi"}
    if choices:
        choice = {"index": 0, "delta": delta or {}, "finish_reason": finish}
        if usage and finish:
            choice["usage"] = usage  # Kimi's in-choice usage
        body["choices"] = [choice]
    else:
        body["choices"] = []
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n"


def feed_text(translator, parts: tuple[str, ...], close: bool = True) -> list[bytes]:
    """What a stream translator writes for upstream SSE text arriving in `parts`."""
    parser = SSEParser()
    out: list[bytes] = []
    for part in parts:
        for event in parser.feed(part.encode()):
            out += translator.feed(event)
    if close:
        out += translator.close()
    return out
