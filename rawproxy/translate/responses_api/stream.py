"""Streaming answers, sans-IO: chat.completion.chunk events in, Responses events out.

Items stream one at a time, each from output_item.added to output_item.done: Codex reads
text and reasoning deltas without their item_id, so a delta can only belong to the item
added last. A kind that comes back after another (reasoning, text, reasoning) therefore
opens a new item rather than reopening the old one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from ...core.ids import new_turn_key, tool_call_id
from ...core.messages import reasoning_of
from ...core.sse import SSEEvent, encode_event
from ..streams import CUT_MESSAGE, StreamEnding
from ._common import (
    AnswerContext,
    Seal,
    as_dict,
    as_list,
    as_str,
    call_item,
    failure_of,
    item_id,
    mark_incomplete,
    message_item,
    new_response_id,
    outcome,
    output_text_part,
    reasoning_item,
    response_object,
    responses_usage,
)

_MALFORMED = "upstream sent a malformed stream event"


@dataclass(slots=True)
class _Call:
    id: str = ""
    name: str = ""
    pending: list[str] = field(default_factory=list)  # fragments not delivered yet (before the item opened)
    arguments: list[str] = field(default_factory=list)  # fragments delivered
    output_index: int | None = None  # once its item opened
    item_id: str = ""
    closed: bool = False


@dataclass(slots=True)
class _Item:
    kind: str  # "reasoning" | "message" | "call"
    output_index: int
    id: str
    parts: list[str] = field(default_factory=list)
    call: int = -1  # the Chat tool_calls index of a call item


class ChatToResponsesStream:
    """Chat Completions chunk events -> Responses stream events (`feed`, then `close`).

    `ending` is None while the stream runs, "complete" once response.completed or
    response.incomplete went out, "failed" once response.failed did; `status` says which
    of completed / incomplete / failed, and `final_response` is the response object the
    terminal event carried. Exactly one terminal event is ever sent.
    """

    def __init__(
        self,
        model: str,
        context: AnswerContext | None = None,
        *,
        response_id: str | None = None,
        created_at: int | None = None,
        turn_key: str | None = None,
        seal: Seal | None = None,
    ) -> None:
        self.model = model
        self.context = context or AnswerContext()
        self.response_id = response_id or new_response_id()
        self.created_at = created_at if created_at is not None else int(time.time())
        self.turn_key = turn_key
        self.seal = seal
        self.ending: StreamEnding | None = None  # the pipeline reads this, as for every StreamTranslator
        self.status: Literal["completed", "incomplete", "failed"] | None = None
        self.final_response: dict | None = None
        self._sequence = 0
        self._started = False
        self._output: list[dict] = []  # finished items; items are sequential, so its length is the next index
        self._open: _Item | None = None
        self._calls: dict[int, _Call] = {}
        self._finish: Any = None
        self._finished = False  # a finish_reason arrived
        self._usage: dict | None = None
        self._usage_final = False  # usage seen with or after finish_reason
        self._cut_short = False  # the answer ends incomplete: its last item is marked so

    # -- public

    def feed(self, event: SSEEvent) -> list[bytes]:
        if self.ending or not event.dispatch:
            return []
        data = event.data.strip()
        if data == "[DONE]":
            return self._complete()
        try:
            chunk = json.loads(data)
        except ValueError:
            return self._fail("server_error", _MALFORMED)
        if not isinstance(chunk, dict):
            return self._fail("server_error", _MALFORMED)
        if chunk.get("error"):
            return self._fail(*failure_of(chunk["error"]))
        out = [] if self._started else self._start()
        for choice in as_list(chunk.get("choices")):
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = as_dict(choice.get("delta"))
            # each kind in turn, so a delta that switches kind loses nothing
            reasoning = reasoning_of(delta)
            if reasoning:
                out += self._reasoning(reasoning)
            text = delta.get("content")
            if isinstance(text, str) and text:  # "" opens no item
                out += self._text(text)
            for call in as_list(delta.get("tool_calls")):
                if isinstance(call, dict):
                    out += self._tool_delta(call)
                if self.ending:
                    return out
            if choice.get("finish_reason"):
                self._finish, self._finished = choice["finish_reason"], True
            if isinstance(choice.get("usage"), dict):  # Kimi: usage inside the last choice
                self._take_usage(choice["usage"])
        if isinstance(chunk.get("usage"), dict):  # include_usage: a trailing chunk with `choices: []`
            self._take_usage(chunk["usage"])
        if self._finished and self._usage_final:
            out += self._complete()
        return out

    def close(self) -> list[bytes]:
        """The upstream ended. Without a finish_reason the answer was cut: a failure, so a
        cut stream never looks complete."""
        if self.ending:
            return []
        if self._finished:
            return self._complete()
        return self._fail("server_error", CUT_MESSAGE)

    def fail(self, message: str, code: str = "server_error") -> list[bytes]:
        """End the stream with response.failed for a reason of the caller's (a timeout,
        a dropped connection); nothing if it already ended."""
        return self._fail(code, message)

    # -- events

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return encode_event(json.dumps(data, ensure_ascii=False), event=kind)

    def _item_event(self, kind: str, item: _Item, **fields: Any) -> bytes:
        return self._event(kind, item_id=item.id, output_index=item.output_index, **fields)

    def _response(self, status: str, **fields: Any) -> dict:
        return response_object(
            response_id=self.response_id, created_at=self.created_at, model=self.model, status=status,
            output=list(self._output), context=self.context, **fields,
        )

    def _start(self) -> list[bytes]:
        self._started = True
        response = self._response("in_progress")
        return [self._event("response.created", response=response), self._event("response.in_progress", response=response)]

    def _take_usage(self, usage: dict) -> None:
        self._usage = usage
        self._usage_final = self._finished

    # -- items

    def _reasoning(self, text: str) -> list[bytes]:
        out: list[bytes] = []
        if self._open is None or self._open.kind != "reasoning":
            out += self._close_item()
            index = len(self._output)
            item = self._open = _Item("reasoning", index, item_id("rs", self.response_id, index))
            added: dict[str, Any] = {"id": item.id, "type": "reasoning", "summary": []}
            if self.context.raw_reasoning:
                added["content"] = []
            out.append(self._event("response.output_item.added", output_index=index, item=added))
            if self.context.summary:
                part = {"type": "summary_text", "text": ""}
                out.append(self._item_event("response.reasoning_summary_part.added", item, summary_index=0, part=part))
            if self.context.raw_reasoning:
                part = {"type": "reasoning_text", "text": ""}
                out.append(self._item_event("response.content_part.added", item, content_index=0, part=part))
        item = self._open
        item.parts.append(text)
        if self.context.summary:
            out.append(self._item_event("response.reasoning_summary_text.delta", item, summary_index=0, delta=text))
        if self.context.raw_reasoning:
            out.append(self._item_event("response.reasoning_text.delta", item, content_index=0, delta=text))
        return out

    def _text(self, text: str) -> list[bytes]:
        out: list[bytes] = []
        if self._open is None or self._open.kind != "message":
            out += self._close_item()
            index = len(self._output)
            item = self._open = _Item("message", index, item_id("msg", self.response_id, index))
            added = {"id": item.id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
            out.append(self._event("response.output_item.added", output_index=index, item=added))
            out.append(self._item_event("response.content_part.added", item, content_index=0, part=output_text_part("")))
        item = self._open
        item.parts.append(text)
        out.append(self._item_event("response.output_text.delta", item, content_index=0, delta=text, logprobs=[]))
        return out

    def _tool_delta(self, fragment: dict) -> list[bytes]:
        k = fragment.get("index")
        if not isinstance(k, int):  # servers that omit `index` send each call whole
            k = len(self._calls) if fragment.get("id") or not self._calls else max(self._calls)
        call = self._calls.setdefault(k, _Call())
        fn = as_dict(fragment.get("function"))
        call.id = call.id or as_str(fragment.get("id"))
        call.name = call.name or as_str(fn.get("name"))
        args = fn.get("arguments")
        if call.closed:
            if isinstance(args, str) and args:  # interleaved calls: items stream one at a time
                return self._fail("server_error", f"upstream sent arguments for tool call {k} after it ended")
            return []
        if isinstance(args, str) and args:
            call.pending.append(args)  # kept even before the name arrives
        out: list[bytes] = []
        if call.output_index is None and call.id and call.name:
            out += self._open_call(k)
        if call.output_index is not None:
            out += self._flush_arguments(call)
        return out

    def _open_call(self, k: int) -> list[bytes]:
        out = self._close_item()
        call = self._calls[k]
        if not call.id:  # never told: one that cannot clash
            call.id = tool_call_id(self.turn_key or new_turn_key(), k, "call")
        index = len(self._output)
        added = call_item(index, self.response_id, call.id, call.name, "", self.context, "in_progress")
        call.output_index, call.item_id = index, added["id"]
        self._open = _Item("call", index, added["id"], call=k)
        out.append(self._event("response.output_item.added", output_index=index, item=added))
        return out

    def _flush_arguments(self, call: _Call) -> list[bytes]:
        if not call.pending:
            return []
        fragment = "".join(call.pending)
        call.pending.clear()
        call.arguments.append(fragment)
        if call.name in self.context.custom_tools:
            return []  # a custom tool's input is a JSON string field until the call ends
        return [self._event("response.function_call_arguments.delta", item_id=call.item_id,
                            output_index=call.output_index, delta=fragment)]

    def _close_item(self, last: bool = False) -> list[bytes]:
        item = self._open
        if item is None:
            return []
        self._open = None
        text = "".join(item.parts)
        out: list[bytes] = []
        if item.kind == "reasoning":
            if self.context.summary:
                out.append(self._item_event("response.reasoning_summary_text.done", item, summary_index=0, text=text))
                part = {"type": "summary_text", "text": text}
                out.append(self._item_event("response.reasoning_summary_part.done", item, summary_index=0, part=part))
            if self.context.raw_reasoning:
                out.append(self._item_event("response.reasoning_text.done", item, content_index=0, text=text))
                part = {"type": "reasoning_text", "text": text}
                out.append(self._item_event("response.content_part.done", item, content_index=0, part=part))
            done = reasoning_item(item.id, text, self.context, self.seal, self.turn_key)
        elif item.kind == "message":
            out.append(self._item_event("response.output_text.done", item, content_index=0, text=text, logprobs=[]))
            out.append(self._item_event("response.content_part.done", item, content_index=0, part=output_text_part(text)))
            done = message_item(item.id, text, "completed")
        else:
            call = self._calls[item.call]
            call.closed = True
            arguments = "".join(call.arguments)
            done = call_item(item.output_index, self.response_id, call.id, call.name, arguments or "{}", self.context, "completed")
            if done["type"] == "function_call":
                if not arguments:  # clients json-parse arguments: never leave them empty
                    out.append(self._item_event("response.function_call_arguments.delta", item, delta="{}"))
                out.append(self._item_event("response.function_call_arguments.done", item, arguments=done["arguments"]))
            else:
                if done["input"]:
                    out.append(self._item_event("response.custom_tool_call_input.delta", item, delta=done["input"]))
                out.append(self._item_event("response.custom_tool_call_input.done", item, input=done["input"]))
        if last and self._cut_short:
            mark_incomplete(done)
        out.append(self._event("response.output_item.done", output_index=item.output_index, item=done))
        self._output.append(done)
        return out

    # -- endings

    def _complete(self) -> list[bytes]:
        if self.ending:
            return []
        out = [] if self._started else self._start()
        status, reason = outcome(self._finish)
        self._cut_short = status == "incomplete"
        for k in sorted(self._calls):  # calls whose id or name never came: still delivered
            call = self._calls[k]
            if call.output_index is None:
                out += self._open_call(k)
                out += self._flush_arguments(call)
        out += self._close_item(last=True)
        response = self._response(status, usage=responses_usage(self._usage), incomplete_reason=reason)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        out.append(self._event(kind, response=response))
        self.ending, self.final_response = "complete", response
        self.status = "completed" if status == "completed" else "incomplete"
        return out

    def _fail(self, code: str, message: str) -> list[bytes]:
        if self.ending:
            return []
        out = [] if self._started else self._start()
        response = self._response("failed", error={"code": code, "message": message})
        out.append(self._event("response.failed", response=response))
        self.ending, self.status, self.final_response = "failed", "failed", response
        return out
