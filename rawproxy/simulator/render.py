"""An Answer as Kimi sends it: JSON or SSE, in either dialect (docs/kimi.md section 3,
docs/protocols.md sections 1 and 2). Pure: bytes out, no IO.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

from ..core.errors import anthropic_error, openai_error
from ..core.sse import encode_event
from .agent import Answer
from .rules import SimError

_STOP = {"stop": "end_turn", "tool_calls": "tool_use"}


@dataclass(frozen=True, slots=True)
class Usage:
    prompt: int  # all input tokens, cached included (OpenAI's prompt_tokens)
    completion: int
    cached: int


def estimate_tokens(size_in_bytes: int) -> int:
    return max(1, size_in_bytes // 4)


def usage_for(request_size: int, answer: Answer, history_len: int) -> Usage:
    out = (answer.reasoning or "") + answer.text + "".join(json.dumps(c.arguments) for c in answer.tool_calls)
    prompt = estimate_tokens(request_size)
    # A follow-up turn finds its prefix in Kimi's automatic cache: report some of it cached.
    cached = (prompt // 2) // 64 * 64 if history_len > 1 else 0
    return Usage(prompt, estimate_tokens(len(out.encode())) + 1, cached)


def signature_for(reasoning: str) -> str:
    """A long opaque signature; Kimi does not validate them (docs/kimi.md section 1)."""
    digest = hashlib.sha512(reasoning.encode()).digest()
    return base64.b64encode(digest * 4).decode()


def pieces(text: str, count: int = 3) -> list[str]:
    """Split into up to `count` non-empty fragments, as a stream delivers text."""
    if len(text) <= count:
        return [text] if text else []
    step = -(-len(text) // count)
    return [text[i : i + step] for i in range(0, len(text), step)]


def error_body(dialect: str, err: SimError) -> bytes:
    # The Anthropic envelope uses Anthropic's type for each status; the OpenAI one keeps
    # Moonshot's own types (e.g. resource_not_found_error, invalid_authentication_error).
    if dialect == "anthropic":
        return anthropic_error(err.status, err.message)
    return openai_error(err.status, err.message, err.type)


# ---------------------------------------------------------------- OpenAI


def openai_usage(u: Usage) -> dict:
    return {
        "prompt_tokens": u.prompt,
        "completion_tokens": u.completion,
        "total_tokens": u.prompt + u.completion,
        "prompt_tokens_details": {"cached_tokens": u.cached},
        "cached_tokens": u.cached,  # Kimi's top-level copy (docs/kimi.md section 3)
    }


def openai_json(answer: Answer, model: str, usage: Usage, msg_id: str, created: int) -> dict:
    message: dict = {"role": "assistant", "content": answer.text}
    if answer.reasoning is not None:
        message["reasoning_content"] = answer.reasoning
    if answer.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
            for c in answer.tool_calls
        ]
    return {
        "id": msg_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": answer.finish}],
        "usage": openai_usage(usage),
    }


def openai_events(answer: Answer, model: str, usage: Usage, msg_id: str, created: int, include_usage: bool) -> list[bytes]:
    """Kimi's order: reasoning_content, then content, then tool_calls; finish_reason and
    usage only in the last choice chunk; a `choices: []` usage chunk when asked; [DONE]."""
    deltas: list[dict] = [{"reasoning_content": p} for p in pieces(answer.reasoning or "")]
    deltas += [{"content": p} for p in pieces(answer.text)]
    for k, call in enumerate(answer.tool_calls):
        head = {"index": k, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        deltas.append({"tool_calls": [head]})
        for frag in pieces(json.dumps(call.arguments)):
            deltas.append({"tool_calls": [{"index": k, "function": {"arguments": frag}}]})
    if deltas:
        deltas[0] = {"role": "assistant", **deltas[0]}
    else:
        deltas.append({"role": "assistant", "content": ""})

    def chunk(choices: list[dict], **extra) -> bytes:
        body = {"id": msg_id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices}
        return encode_event(json.dumps({**body, **extra}))

    out = [chunk([{"index": 0, "delta": d, "finish_reason": None}]) for d in deltas]
    last = {"index": 0, "delta": {}, "finish_reason": answer.finish, "usage": openai_usage(usage)}
    out.append(chunk([last]))
    if include_usage:
        out.append(chunk([], usage=openai_usage(usage)))
    out.append(encode_event("[DONE]"))
    return out


# ---------------------------------------------------------------- Anthropic


def _anthropic_usage(u: Usage, output: int) -> dict:
    return {
        "input_tokens": u.prompt - u.cached,  # uncached input only (docs/protocols.md section 1)
        "output_tokens": output,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": u.cached,
    }


def anthropic_json(answer: Answer, model: str, usage: Usage, msg_id: str) -> dict:
    content: list[dict] = []
    if answer.reasoning is not None:
        content.append({"type": "thinking", "thinking": answer.reasoning, "signature": signature_for(answer.reasoning)})
    if answer.text:
        content.append({"type": "text", "text": answer.text})
    content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in answer.tool_calls]
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _STOP[answer.finish],
        "stop_sequence": None,
        "usage": _anthropic_usage(usage, usage.completion),
    }


def _event(data: dict) -> bytes:
    return encode_event(json.dumps(data), data["type"])


def anthropic_events(answer: Answer, model: str, usage: Usage, msg_id: str) -> list[bytes]:
    start = anthropic_json(answer, model, usage, msg_id)
    start.update(content=[], stop_reason=None, usage=_anthropic_usage(usage, 1))
    out = [_event({"type": "message_start", "message": start}), _event({"type": "ping"})]
    blocks: list[tuple[dict, list[dict]]] = []
    if answer.reasoning is not None:
        deltas = [{"type": "thinking_delta", "thinking": p} for p in pieces(answer.reasoning)]
        deltas.append({"type": "signature_delta", "signature": signature_for(answer.reasoning)})
        blocks.append(({"type": "thinking", "thinking": "", "signature": ""}, deltas))
    if answer.text:
        blocks.append(({"type": "text", "text": ""}, [{"type": "text_delta", "text": p} for p in pieces(answer.text)]))
    for call in answer.tool_calls:
        frags = pieces(json.dumps(call.arguments))
        blocks.append((
            {"type": "tool_use", "id": call.id, "name": call.name, "input": {}},
            [{"type": "input_json_delta", "partial_json": f} for f in frags],
        ))
    for index, (block, deltas) in enumerate(blocks):
        out.append(_event({"type": "content_block_start", "index": index, "content_block": block}))
        out += [_event({"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
        out.append(_event({"type": "content_block_stop", "index": index}))
    out.append(_event({
        "type": "message_delta",
        "delta": {"stop_reason": _STOP[answer.finish], "stop_sequence": None},
        "usage": _anthropic_usage(usage, usage.completion),
    }))
    out.append(_event({"type": "message_stop"}))
    return out
