"""The tap: makes each upstream answer a tool-call turn the proxy can recognise later.

A turn is keyed by a turn key: the key goes into the id of every tool call of the answer
(`ids.tool_call_id`), and the answer's reasoning is what gets remembered under it, so a
client sending any of those ids back brings the reasoning back. The tap reads the answer
in the upstream's dialect on its way to the client; events it does not change are
returned as the same object (the pass-through path forwards their original bytes), and
it parses only the events it must: the plain ones without jsonfast's check for huge
integers, which only an exact number needs.
"""

from __future__ import annotations

from typing import Protocol

from . import jsonfast
from .ids import tool_call_id
from .messages import reasoning_of
from .reasoning import Reasoning
from .sse import SSEEvent, encode_event
from .usage import TokenUsage, json_object


class Tap(Protocol):
    turn_key: str
    tool_calls: int
    usage: TokenUsage  # filled as the answer passes: the access log and the token metric read it

    def message(self, body: dict) -> None: ...

    def event(self, ev: SSEEvent) -> SSEEvent: ...

    def remembered(self) -> Reasoning | None: ...


def tap_for(upstream_format: str, turn_key: str, prefix: str) -> Tap:
    """The tap for an answer in `upstream_format`; `prefix` is the id style of the client
    (`toolu` for Anthropic clients, `call` for OpenAI ones)."""
    if upstream_format == "anthropic":
        return AnthropicTap(turn_key, prefix)
    return OpenAITap(turn_key, prefix)


class _Collected:
    __slots__ = ("turn_key", "prefix", "parts", "signature", "tool_calls", "usage")

    def __init__(self, turn_key: str, prefix: str) -> None:
        self.turn_key = turn_key
        self.prefix = prefix
        self.parts: list[str] = []
        self.signature: str | None = None
        self.tool_calls = 0
        self.usage = TokenUsage()

    def remembered(self) -> Reasoning | None:
        """What to store: only answers with tool calls get replayed as tool-call turns."""
        text = "".join(self.parts)
        if not self.tool_calls or not text.strip():
            return None
        return Reasoning(text, self.signature)


class AnthropicTap(_Collected):
    __slots__ = ("_in_thinking",)

    def __init__(self, turn_key: str, prefix: str) -> None:
        super().__init__(turn_key, prefix)
        self._in_thinking = False

    def _plain_thinking_delta(self, data: str) -> bool:
        """Collects a thinking block's delta that reads plainly (a delta object, strings
        where they are kept) without the exact parse; False when it needs that parse, to
        get what it holds right or to raise where a malformed event does (the relay ends
        the stream there, and a same-dialect client has no other reader of the event)."""
        doc = jsonfast.loads_unchecked(data)
        delta = doc.get("delta") if type(doc) is dict else None
        if type(delta) is not dict:
            return False
        kind = delta.get("type")
        if kind == "thinking_delta":
            text = delta.get("thinking")
            if type(text) is not str:
                return False
            self.parts.append(text)
        elif kind == "signature_delta":
            return False  # once a block: not worth a second way
        return True

    def message(self, body: dict) -> None:
        """A whole (non-streamed) message: rewrite ids in place, collect thinking."""
        self.usage.read_anthropic(body.get("usage"))
        for block in body.get("content") or ():
            kind = block.get("type")
            if kind == "thinking":
                self.parts.append(block.get("thinking") or "")
                self.signature = block.get("signature") or self.signature
            elif kind == "tool_use":
                block["id"] = tool_call_id(self.turn_key, self.tool_calls, self.prefix)
                self.tool_calls += 1

    def event(self, ev: SSEEvent) -> SSEEvent:
        if not ev.dispatch:
            return ev
        kind = ev.event
        if kind == "content_block_delta":
            if self._in_thinking and not self._plain_thinking_delta(ev.data):
                delta = jsonfast.loads(ev.data).get("delta") or {}
                if delta.get("type") == "thinking_delta":
                    text = delta.get("thinking") or ""
                    if not isinstance(text, str):  # malformed: the relay ends the stream with an error event
                        raise TypeError(f"a thinking delta's text is {type(text).__name__}, not a string")
                    self.parts.append(text)
                elif delta.get("type") == "signature_delta":
                    self.signature = delta.get("signature") or self.signature
            return ev
        if kind == "content_block_start" or (kind is None and '"content_block_start"' in ev.data):
            doc = jsonfast.loads(ev.data)
            block = doc.get("content_block") or {}
            btype = block.get("type")
            self._in_thinking = btype == "thinking"
            if self._in_thinking and block.get("thinking"):
                self.parts.append(block["thinking"])
            if btype == "tool_use":
                block["id"] = tool_call_id(self.turn_key, self.tool_calls, self.prefix)
                self.tool_calls += 1
                data = jsonfast.dumps_text(doc)
                return SSEEvent(ev.event, data, encode_event(data, ev.event or "content_block_start"), True)
            return ev
        if kind == "content_block_stop":
            self._in_thinking = False
        elif kind in ("message_start", "message_delta"):  # once each per answer: cheap to parse
            doc = json_object(ev.data) or {}
            usage = doc.get("usage")
            if kind == "message_start" and isinstance(doc.get("message"), dict):
                usage = doc["message"].get("usage")
            self.usage.read_anthropic(usage)
        return ev


class OpenAITap(_Collected):
    __slots__ = ("_seen",)

    def __init__(self, turn_key: str, prefix: str) -> None:
        super().__init__(turn_key, prefix)
        self._seen: set[tuple[int, int]] = set()

    def message(self, body: dict) -> None:
        self._take_usage(body)
        for choice in body.get("choices") or ():
            msg = choice.get("message") or {}
            text = reasoning_of(msg)
            if text and choice.get("index", 0) == 0:
                self.parts.append(text)
            for k, call in enumerate(msg.get("tool_calls") or ()):
                call["id"] = tool_call_id(self.turn_key, k, self.prefix)
                self.tool_calls += 1

    def event(self, ev: SSEEvent) -> SSEEvent:
        if not ev.dispatch:
            return ev
        data = ev.data
        if '"usage"' in data:  # Kimi's last choice chunk, or the include_usage chunk
            self._take_usage(json_object(data) or {})
        # Most chunks carry only `content`: skip the parse unless the chunk can matter.
        if "reasoning" not in data and "tool_calls" not in data:
            return ev
        if data == "[DONE]" or self._plain_chunk(data):
            return ev
        doc = jsonfast.loads(data)
        changed = False
        for choice in doc.get("choices") or ():
            delta = choice.get("delta") or {}
            text = reasoning_of(delta)
            if text and choice.get("index", 0) == 0:
                self.parts.append(text)
            for call in delta.get("tool_calls") or ():
                if call.get("id"):
                    k = call.get("index", 0)
                    call["id"] = tool_call_id(self.turn_key, k, self.prefix)
                    if (choice.get("index", 0), k) not in self._seen:
                        self._seen.add((choice.get("index", 0), k))
                        self.tool_calls += 1
                    changed = True
        if not changed:
            return ev
        out = jsonfast.dumps_text(doc)
        return SSEEvent(None, out, encode_event(out), True)

    def _plain_chunk(self, data: str) -> bool:
        """Collects the reasoning of a chunk that reads plainly (objects and lists where
        the loop below expects them) and has no tool-call id to rewrite, without the exact
        parse; False when it needs that parse: for an id's exact index, or to raise where
        a malformed event does."""
        doc = jsonfast.loads_unchecked(data)
        choices = doc.get("choices") if type(doc) is dict else False
        if choices is None:
            return True
        if type(choices) is not list:
            return False
        texts = []
        for choice in choices:
            delta = choice.get("delta") if type(choice) is dict else None
            if type(delta) is not dict:
                return False
            calls = delta.get("tool_calls")
            if calls is not None:
                if type(calls) is not list:
                    return False
                for call in calls:
                    if type(call) is not dict or call.get("id"):
                        return False
            text = reasoning_of(delta)
            if text and choice.get("index", 0) == 0:  # a float read for a huge index is not 0 either
                texts.append(text)
        self.parts += texts
        return True

    def _take_usage(self, doc: dict) -> None:
        """Usage at the top level (a whole answer, an include_usage chunk) or, as Kimi
        streams it, inside the last choice."""
        usage = doc.get("usage")
        if not isinstance(usage, dict):
            choices = doc.get("choices")
            first = choices[0] if isinstance(choices, list) and choices else None
            usage = first.get("usage") if isinstance(first, dict) else None
        self.usage.read_openai(usage)
