"""Streaming translation, sans-IO: feed the upstream's parsed SSE events, get the client's
SSE bytes back (docs/protocols.md section 3, "Streams"). The pipeline parses the upstream with
`SSEParser`, so data split across TCP chunks is already whole here (claude-code-router 198).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Any, Literal, Protocol

from ..core import jsonfast
from ..core.errors import anthropic_type_for, openai_type_for
from ..core.ids import make_signature, new_turn_key, sanitize_tool_id, tool_call_id
from ..core.messages import reasoning_of
from ..core.sse import SSEEvent, encode_event
from .responses import (
    anthropic_usage,
    completion_id,
    finish_reason,
    message_id,
    openai_usage,
    stop_reason,
)

StreamEnding = Literal["complete", "failed"]
CUT_MESSAGE = "upstream stream ended before the response was complete"

_dumps = jsonfast.dumps_text


class StreamTranslator(Protocol):
    """Upstream events in, the client's SSE bytes out. `ending` says how the stream ended:
    None while it runs, "complete" once the client was given the answer's end, "failed"
    once it was given an error event; nothing is written after either."""

    ending: StreamEnding | None

    def feed(self, event: SSEEvent) -> list[bytes]: ...

    def close(self) -> list[bytes]: ...


class PassThrough:
    """Same dialect on both sides: every event leaves as the bytes that came in. It
    watches for the events that end a stream in `dialect` so the relay knows how it
    ended, and ends a cut stream with an error event, as the translators do."""

    __slots__ = ("ending", "_anthropic")

    def __init__(self, dialect: str) -> None:
        self.ending: StreamEnding | None = None
        self._anthropic = dialect == "anthropic"

    def feed(self, event: SSEEvent) -> list[bytes]:
        if self.ending is None and event.dispatch:
            if self._anthropic:
                if event.event == "message_stop":
                    self.ending = "complete"
                elif event.event == "error":
                    self.ending = "failed"  # the upstream's own error event tells the client
            elif event.data == "[DONE]":
                self.ending = "complete"
            elif '"error"' in event.data and _is_error_chunk(event.data):
                self.ending = "failed"
        return [event.raw]

    def close(self) -> list[bytes]:
        if self.ending is not None:
            return []
        self.ending = "failed"
        if self._anthropic:
            return [_event({"type": "error", "error": {"type": "api_error", "message": CUT_MESSAGE}})]
        error = {"message": CUT_MESSAGE, "type": "server_error", "param": None, "code": None}
        return [encode_event(json.dumps({"error": error}))]


def _is_error_chunk(data: str) -> bool:
    try:
        doc = jsonfast.loads(data)
    except ValueError:
        return False
    return isinstance(doc, dict) and bool(doc.get("error"))


def _event(data: dict) -> bytes:
    return encode_event(_dumps(data), event=data["type"])


def _around_last_string(event: bytes) -> tuple[bytes, bytes]:
    """An encoded event whose last string value is "", as the bytes before and after it.
    The deltas of a block differ only in that string: the rest is encoded once per block,
    and `_in_slot` encodes each delta's string alone."""
    head, _, tail = event.rpartition(b'""')
    return head, tail


def _in_slot(slot: tuple[bytes, bytes], value: str) -> bytes | None:
    """The event of `slot` with `value` as its string: the bytes the whole event gets, as
    the string is escaped by the encoder's own function and JSON holds no raw line break
    (encode_event writes one data line either way). None for a lone surrogate: the caller
    encodes the whole event, which raises the error it always raised."""
    try:
        return slot[0] + encode_basestring(value).encode() + slot[1]
    except UnicodeEncodeError:
        return None


@dataclass(slots=True)
class _Call:
    id: str = ""
    name: str = ""
    pending: list[str] = field(default_factory=list)  # argument fragments before the block opened
    block: int | None = None  # Anthropic block index once opened
    closed: bool = False


class OpenAIToAnthropicStream:
    """OpenAI chat.completion.chunk events -> Anthropic message events."""

    def __init__(self, model: str, turn_key: str | None = None) -> None:
        self.model = model
        self.turn_key = turn_key
        self.ending: StreamEnding | None = None
        self._signature = make_signature(turn_key)
        self._started = False
        self._done = False
        self._index = -1  # last opened block index; indexes go 0, 1, 2... in start order
        self._open: Any = None  # "thinking" | "text" | int (tool-call index) | None
        self._delta_type = ""  # the delta type `_delta_slot` was encoded for, in the open block
        self._delta_slot = (b"", b"")  # see _around_last_string
        self._calls: dict[int, _Call] = {}
        self._finish: str | None = None
        self._finished = False  # a finish_reason arrived
        self._matched: Any = None
        self._usage: dict | None = None
        self._usage_final = False  # usage seen with or after finish_reason

    # -- public

    def feed(self, event: SSEEvent) -> list[bytes]:
        if self._done or not event.dispatch:
            return []
        data = event.data.strip()
        if data == "[DONE]":
            return self._complete()
        try:
            chunk = jsonfast.loads(data)
        except ValueError:
            return self._fail("api_error", "upstream sent a malformed stream event")
        if not isinstance(chunk, dict):
            return self._fail("api_error", "upstream sent a malformed stream event")
        if chunk.get("error"):
            return self._fail(*_anthropic_error(chunk["error"]))
        out = [] if self._started else self._start(chunk)
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            # Each kind is handled in turn, so a delta that switches kind is delivered
            # (LiteLLM 30765), and text after a tool call opens a new block.
            reasoning = reasoning_of(delta)
            if reasoning:
                if self._open != "thinking":
                    out += self._open_block("thinking", {"type": "thinking", "thinking": "", "signature": ""})
                out.append(self._string_delta("thinking_delta", "thinking", reasoning))
            text = delta.get("content")
            if isinstance(text, str) and text:  # "" creates no block
                if self._open != "text":
                    out += self._open_block("text", {"type": "text", "text": ""})
                out.append(self._string_delta("text_delta", "text", text))
            for call in delta.get("tool_calls") or []:
                if isinstance(call, dict):
                    out += self._tool_delta(call)
                if self._done:
                    return out
            if choice.get("finish_reason"):
                self._finish, self._finished = choice["finish_reason"], True
                self._matched = choice.get("stop_reason")
            if choice.get("usage"):  # Kimi: usage inside the last choice (docs/kimi.md section 3)
                self._take_usage(choice["usage"])
        if chunk.get("usage"):  # include_usage: a trailing chunk with `choices: []`
            self._take_usage(chunk["usage"])
        if self._finished and self._usage_final:
            out += self._complete()
        return out

    def close(self) -> list[bytes]:
        if self._done:
            return []
        if self._finished:
            return self._complete()
        return self._fail("api_error", CUT_MESSAGE)  # a cut stream must never look complete

    # -- internals

    def _take_usage(self, usage: dict) -> None:
        self._usage = usage
        self._usage_final = self._finished

    def _start(self, chunk: dict) -> list[bytes]:
        self._started = True
        usage = anthropic_usage(chunk.get("usage"))
        usage["output_tokens"] = 0
        message: dict[str, Any] = {
            "id": message_id(chunk.get("id")), "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage,
        }
        return [_event({"type": "message_start", "message": message})]

    def _close(self) -> list[bytes]:
        if self._open is None:
            return []
        out = []
        if self._open == "thinking":  # Claude Code keeps only signed thinking blocks
            out.append(self._block_delta({"type": "signature_delta", "signature": self._signature}))
        elif isinstance(self._open, int):
            self._calls[self._open].closed = True
        out.append(_event({"type": "content_block_stop", "index": self._index}))
        self._open = None
        return out

    def _open_block(self, key: Any, block: dict) -> list[bytes]:
        out = self._close()
        self._index += 1
        self._open = key
        self._delta_type = ""
        out.append(_event({"type": "content_block_start", "index": self._index, "content_block": block}))
        return out

    def _block_delta(self, delta: dict) -> bytes:
        return _event({"type": "content_block_delta", "index": self._index, "delta": delta})

    def _string_delta(self, delta_type: str, name: str, value: str) -> bytes:
        """The open block's delta {"type": delta_type, name: value}."""
        if self._delta_type != delta_type:
            self._delta_slot = _around_last_string(self._block_delta({"type": delta_type, name: ""}))
            self._delta_type = delta_type
        return _in_slot(self._delta_slot, value) or self._block_delta({"type": delta_type, name: value})

    def _tool_delta(self, tc: dict) -> list[bytes]:
        k = tc.get("index")
        if not isinstance(k, int):  # servers that omit `index` send each call whole
            k = len(self._calls) if tc.get("id") or not self._calls else max(self._calls)
        call = self._calls.setdefault(k, _Call())
        fn = tc.get("function") or {}
        if tc.get("id") and not call.id:
            call.id = tc["id"]
        if fn.get("name") and not call.name:
            call.name = fn["name"]
        args = fn.get("arguments")
        if call.closed:
            if args:  # an upstream interleaving calls: unrepresentable as Anthropic blocks
                return self._fail("api_error", f"upstream sent arguments for tool call {k} after it ended")
            return []
        if isinstance(args, str) and args:
            call.pending.append(args)  # kept even before the name arrives ("input: {}" bug)
        out: list[bytes] = []
        if call.block is None and call.id and call.name:
            out += self._open_call(k)
        if call.block is not None:
            out += self._flush_args(call)
        return out

    def _flush_args(self, call: _Call) -> list[bytes]:
        if not call.pending:
            return []
        fragment = "".join(call.pending)
        call.pending.clear()
        return [self._string_delta("input_json_delta", "partial_json", fragment)]

    def _open_call(self, k: int) -> list[bytes]:
        call = self._calls[k]
        if not call.id:  # never told: make one that cannot clash
            call.id = tool_call_id(self.turn_key or new_turn_key(), k, "toolu")
        block = {"type": "tool_use", "id": sanitize_tool_id(call.id), "name": call.name, "input": {}}
        out = self._open_block(k, block)
        call.block = self._index
        return out

    def _complete(self) -> list[bytes]:
        if self._done:
            return []
        out = [] if self._started else self._start({})
        for k in sorted(self._calls):  # calls whose id or name never came: still delivered
            call = self._calls[k]
            if call.block is None:
                out += self._open_call(k)
                out += self._flush_args(call)
        out += self._close()
        stop, seq = stop_reason(self._finish, bool(self._calls), self._matched)
        usage: dict[str, int] = {"output_tokens": 0}
        if self._usage is not None:  # the real figures (LiteLLM 24176 left them zero)
            full = anthropic_usage(self._usage)
            usage = {k: full[k] for k in ("input_tokens", "output_tokens", "cache_read_input_tokens")}
        delta = {"stop_reason": stop, "stop_sequence": seq}
        out.append(_event({"type": "message_delta", "delta": delta, "usage": usage}))
        out.append(_event({"type": "message_stop"}))
        self._done = True
        self.ending = "complete"
        return out

    def _fail(self, kind: str, message: str) -> list[bytes]:
        self._done = True  # no message_stop after an error
        self.ending = "failed"
        return [_event({"type": "error", "error": {"type": kind, "message": message}})]


def _anthropic_error(err: Any) -> tuple[str, str]:
    if not isinstance(err, dict):
        return "api_error", str(err)
    return anthropic_type_for(err.get("type"), err.get("code")), str(err.get("message") or "upstream error")


# A text block's kind -> the type of its deltas, and the OpenAI delta field they become.
_TEXT_KINDS = {"text": ("text_delta", "content"), "thinking": ("thinking_delta", "reasoning_content")}


@dataclass(slots=True)
class _Block:
    kind: str
    tool: int = -1  # OpenAI tool_calls index for tool_use blocks
    input: Any = None  # tool_use input given whole in content_block_start
    got_args: bool = False
    first: bool = True  # no text delivered from this block yet
    slot: tuple[bytes, bytes] | None = None  # its chunks around their one string (see _around_last_string)


def _delta_of(block: _Block, value: Any) -> dict:
    """The OpenAI delta carrying `value` as the text of `block` or its tool call's arguments."""
    if block.kind == "tool_use":
        return {"tool_calls": [{"index": block.tool, "function": {"arguments": value}}]}
    return {_TEXT_KINDS[block.kind][1]: value}


class AnthropicToOpenAIStream:
    """Anthropic message events -> OpenAI chat.completion.chunk events."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.ending: StreamEnding | None = None
        self._id = ""
        self._created = int(time.time())
        self._started = False
        self._done = False
        self._blocks: dict[Any, _Block] = {}  # keyed by the index the upstream sent
        self._tools = 0
        self._said = {"text": False, "thinking": False}  # a block of this kind had text
        self._finish = "stop"
        self._usage: dict[str, int] = {}

    def feed(self, event: SSEEvent) -> list[bytes]:
        if self._done or not event.dispatch:
            return []
        try:
            data = jsonfast.loads(event.data)
        except ValueError:
            return self._fail("server_error", "upstream sent a malformed stream event")
        if not isinstance(data, dict):
            return self._fail("server_error", "upstream sent a malformed stream event")
        kind = data.get("type") or event.event
        if kind == "error":
            err = data.get("error")
            if not isinstance(err, dict):
                err = {"message": err}
            err_type = err.get("type")
            text = str(err.get("message") or "upstream error")
            return self._fail(openai_type_for(err_type if isinstance(err_type, str) else "server_error"), text)
        if kind in (None, "ping"):
            return []
        out = []
        if not self._started:
            start = data.get("message") if kind == "message_start" else None
            start = start if isinstance(start, dict) else {}
            self._started = True
            self._id = completion_id(start.get("id"))
            self._take_usage(start.get("usage"))
            out.append(self._chunk({"role": "assistant"}))
        if kind == "content_block_start":
            out += self._block_start(data.get("index"), data.get("content_block") or {})
        elif kind == "content_block_delta":
            out += self._block_delta(self._blocks.get(data.get("index")), data.get("delta") or {})
        elif kind == "content_block_stop":
            block = self._blocks.get(data.get("index"))
            if block and block.kind == "tool_use" and not block.got_args:
                # OpenAI clients json.loads(arguments): never leave them empty
                arguments = _dumps(block.input or {})
                out.append(self._tool_chunk({"index": block.tool, "function": {"arguments": arguments}}))
        elif kind == "message_delta":
            self._finish = finish_reason((data.get("delta") or {}).get("stop_reason"))
            self._take_usage(data.get("usage"))
        elif kind == "message_stop":
            out += self._complete()
        return out

    def close(self) -> list[bytes]:
        if self._done:
            return []
        return self._fail("server_error", CUT_MESSAGE)  # no [DONE]: a cut stream must never look complete

    def _take_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):  # message_delta values overwrite earlier ones
            self._usage.update({k: v for k, v in usage.items() if isinstance(v, int)})

    def _block_start(self, index: Any, cb: dict) -> list[bytes]:
        kind = cb.get("type", "")
        if kind != "tool_use":
            block = self._blocks[index] = _Block(kind)
            if kind in ("text", "thinking") and cb.get(kind):  # relays that start blocks non-empty
                return self._block_delta(block, {"type": f"{kind}_delta", kind: cb[kind]})
            return []
        block = self._blocks[index] = _Block(kind, tool=self._tools, input=cb.get("input"))
        self._tools += 1
        # id and name once, here: the SDK concatenates strings per index
        call_id = sanitize_tool_id(str(cb.get("id", "")))
        fn = {"name": cb.get("name", ""), "arguments": ""}
        call = {"index": block.tool, "id": call_id, "type": "function", "function": fn}
        return [self._tool_chunk(call)]

    def _block_delta(self, block: _Block | None, delta: dict) -> list[bytes]:
        kind = delta.get("type")
        if block is None:
            return []
        if kind == "input_json_delta" and block.kind == "tool_use":
            fragment = delta.get("partial_json") or ""
            if not fragment:
                return []
            block.got_args = True
            return [self._string_chunk(block, fragment)]
        block_kind = block.kind
        text_kind = _TEXT_KINDS.get(block_kind) if isinstance(block_kind, str) else None
        if text_kind is None or kind != text_kind[0]:
            return []  # signature_delta, citations_delta: no OpenAI form
        text = delta.get(block_kind) or ""
        if not text:
            return []
        if block.first and self._said[block_kind]:
            text = "\n\n" + text  # blocks of a kind join with a blank line, as in responses.py
        block.first = False
        self._said[block_kind] = True
        return [self._string_chunk(block, text)]

    def _string_chunk(self, block: _Block, value: Any) -> bytes:
        """The chunk of `_delta_of(block, value)`."""
        if not isinstance(value, str):  # relayed as the JSON value it is
            return self._chunk(_delta_of(block, value))
        if block.slot is None:
            block.slot = _around_last_string(self._chunk(_delta_of(block, "")))
        return _in_slot(block.slot, value) or self._chunk(_delta_of(block, value))

    def _complete(self) -> list[bytes]:
        out = [self._chunk({}, finish=self._finish)]
        if self.include_usage:
            out.append(self._raw({"choices": [], "usage": openai_usage(self._usage)}))
        out.append(encode_event("[DONE]"))
        self._done = True
        self.ending = "complete"
        return out

    def _fail(self, kind: str, message: str) -> list[bytes]:
        self._done = True
        self.ending = "failed"
        error = {"message": message, "type": kind, "param": None, "code": None}
        return [encode_event(_dumps({"error": error}))]

    def _tool_chunk(self, call: dict) -> bytes:
        return self._chunk({"tool_calls": [call]})

    def _chunk(self, delta: dict, finish: str | None = None) -> bytes:
        return self._raw({"choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]})

    def _raw(self, body: dict) -> bytes:
        chunk = {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self.model}
        chunk.update(body)
        return encode_event(_dumps(chunk))
