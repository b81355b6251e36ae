"""Non-streaming response bodies, and the finish/usage mapping streams share (docs/protocols.md
section 3, "Finish and usage")."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from ..core.errors import ClientError
from ..core.ids import id_chars, make_signature
from ..core.messages import reasoning_of, text_of
from ._content import openai_tool_call, tool_use_block

_FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",  # a server tool paused the turn; the answer so far is complete
    "refusal": "content_filter",
    "model_context_window_exceeded": "length",  # cut by a token limit, like `length`
}


def stop_reason(finish: str | None, has_tools: bool, matched: Any = None) -> tuple[str, str | None]:
    """OpenAI finish_reason -> (Anthropic stop_reason, stop_sequence). `matched` is the stop
    string some servers (vLLM) report in `choice.stop_reason`; without it a `stop` is end_turn."""
    if finish == "stop" and isinstance(matched, str) and matched:
        return "stop_sequence", matched
    if has_tools and finish in (None, "stop", "tool_calls", "function_call"):
        return "tool_use", None  # some servers say `stop` next to tool calls; the client must run them
    return _FINISH_TO_STOP.get(finish or "stop", "end_turn"), None


def finish_reason(stop: str | None) -> str:
    return _STOP_TO_FINISH.get(stop or "end_turn", "stop")


def anthropic_usage(usage: dict | None) -> dict:
    """OpenAI usage -> Anthropic usage; Anthropic input_tokens counts uncached input only."""
    usage = usage or {}
    prompt = usage.get("prompt_tokens") or 0
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or usage.get("cached_tokens") or 0
    return {
        "input_tokens": max(prompt - cached, 0),
        "output_tokens": usage.get("completion_tokens") or 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def openai_usage(usage: dict | None) -> dict:
    usage = usage or {}
    cached = usage.get("cache_read_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + (usage.get("cache_creation_input_tokens") or 0) + cached
    completion = usage.get("output_tokens") or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def message_id(upstream_id: Any) -> str:
    tail = id_chars(upstream_id) if isinstance(upstream_id, str) else ""
    if tail.startswith("msg_"):
        return tail
    return "msg_" + (tail or secrets.token_hex(12))


def completion_id(upstream_id: Any) -> str:
    tail = upstream_id if isinstance(upstream_id, str) else ""
    tail = tail[4:] if tail.startswith("msg_") else tail
    return tail if tail.startswith("chatcmpl-") else "chatcmpl-" + (tail or secrets.token_hex(12))


def openai_to_anthropic_response(body: dict, turn_key: str | None = None) -> dict:
    choices = body.get("choices") or [{}]
    choice = choices[0]
    msg = choice.get("message") or {}
    content: list[dict] = []
    reasoning = reasoning_of(msg)
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": make_signature(turn_key)})
    text = text_of(msg.get("content"))  # some servers answer with parts
    if text:  # never an empty text block (Anthropic rejects them when sent back)
        content.append({"type": "text", "text": text})
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        raw = fn.get("arguments") or "{}"
        try:
            args = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            args = None
        if not isinstance(args, dict):
            # the upstream's fault, not the client's: a 502, never a silent `input: {}`
            problem = f"upstream tool call {fn.get('name')!r} has arguments that are not a JSON object"
            raise ClientError(problem, status=502)
        content.append(tool_use_block(call, args))
    stop, seq = stop_reason(choice.get("finish_reason"), bool(msg.get("tool_calls")), choice.get("stop_reason"))
    return {
        "id": message_id(body.get("id")),
        "type": "message",
        "role": "assistant",
        "model": body.get("model", ""),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": seq,
        "usage": anthropic_usage(body.get("usage") or choice.get("usage")),
    }


def anthropic_to_openai_response(body: dict) -> dict:
    texts, thoughts, calls = [], [], []
    for block in body.get("content") or []:
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            texts.append(block["text"])
        elif kind == "thinking" and block.get("thinking"):
            thoughts.append(block["thinking"])
        elif kind == "tool_use":
            calls.append(openai_tool_call(block))
        # redacted_thinking and server-tool blocks have no OpenAI form
    # Blocks of a kind join with a blank line; AnthropicToOpenAIStream does the same.
    message: dict[str, Any] = {"role": "assistant", "content": "\n\n".join(texts) if texts else None}
    if thoughts:
        message["reasoning_content"] = "\n\n".join(thoughts)
    if calls:
        message["tool_calls"] = calls
    finish = finish_reason(body.get("stop_reason"))
    choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
    return {
        "id": completion_id(body.get("id")),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", ""),
        "choices": [choice],
        "usage": openai_usage(body.get("usage")),
    }
