"""What the request side hands the answer side, and the pieces both answer forms share:
ids, usage, finish -> status, output items, error codes, the response envelope."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# The proxy makes encrypted_content itself; these keep the translators pure.
Seal = Callable[[str, str | None], str]  # (reasoning text, turn key) -> token for the client
Unseal = Callable[[str], str | None]  # token from the client -> reasoning text, None if not ours

# A namespace tool's children reach the upstream as flat functions named <namespace>__<name>.
NAMESPACE_JOIN = "__"

# The finish reasons a Responses client sees as `incomplete`, with the reason it reads.
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}

# Upstream error types/codes -> the codes Responses clients act on (Codex stops on
# context_length_exceeded and insufficient_quota, waits on rate_limit_exceeded, retries the rest).
_FAILURE_CODES = {
    "context_length_exceeded": "context_length_exceeded",
    "rate_limit_error": "rate_limit_exceeded",
    "rate_limit_exceeded": "rate_limit_exceeded",
    "rate_limit_reached_error": "rate_limit_exceeded",
    "429": "rate_limit_exceeded",
    "insufficient_quota": "insufficient_quota",
    "exceeded_current_quota_error": "insufficient_quota",
    "billing_error": "insufficient_quota",
}


@dataclass(frozen=True, slots=True)
class AnswerContext:
    """What the request said that shapes the answer; `responses_to_chat_request` fills it.

    The default suits an answer without a request at hand: reasoning shown as a summary,
    nothing sealed, no custom or namespaced tools, the SDK's required echo fields only.
    """

    custom_tools: frozenset[str] = frozenset()  # upstream function names that are custom tools
    namespaced: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # flat name -> (namespace, name)
    summary: bool = True  # reasoning text as the reasoning item's summary
    raw_reasoning: bool = False  # reasoning text also as reasoning_text content
    encrypted_reasoning: bool = False  # client included reasoning.encrypted_content
    echo: Mapping[str, Any] = field(default_factory=dict)  # request fields a Response object repeats


def as_dict(value: Any) -> dict:
    """Upstream JSON where an object belongs, or an empty one: a stray shape is not a crash."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def new_response_id() -> str:
    return "resp_" + secrets.token_hex(16)


def item_id(prefix: str, response_id: str, output_index: int) -> str:
    """Item ids follow from the response id, so both answer forms name items alike."""
    tail = response_id.removeprefix("resp_") or "0"
    return f"{prefix}_{tail}_{output_index}"


def outcome(finish: Any) -> tuple[str, str | None]:
    """Chat finish_reason -> (Response status, incomplete_details.reason)."""
    reason = _INCOMPLETE.get(finish) if isinstance(finish, str) else None
    return ("incomplete", reason) if reason else ("completed", None)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def responses_usage(usage: Any) -> dict | None:
    """Chat usage -> Responses usage. Responses input_tokens counts cached input too, like
    prompt_tokens; Kimi reports the cached part at the top level instead of in details."""
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    cached = cached or _count(usage.get("cached_tokens"))
    out_details = usage.get("completion_tokens_details")
    reasoning = _count(out_details.get("reasoning_tokens")) if isinstance(out_details, dict) else 0
    prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def failure_of(err: Any) -> tuple[str, str]:
    """An upstream error object -> (Responses error code, message)."""
    if not isinstance(err, dict):
        return "server_error", str(err) or "upstream error"
    code = "server_error"
    for tag in (err.get("code"), err.get("type")):
        if tag is not None and str(tag) in _FAILURE_CODES:
            code = _FAILURE_CODES[str(tag)]
            break
    return code, str(err.get("message") or "upstream error")


# ---------------------------------------------------------------- output items


def reasoning_item(rid: str, text: str, context: AnswerContext, seal: Seal | None, turn_key: str | None) -> dict:
    item: dict[str, Any] = {"id": rid, "type": "reasoning", "summary": []}
    if context.summary:
        item["summary"] = [{"type": "summary_text", "text": text}]
    if context.raw_reasoning:
        item["content"] = [{"type": "reasoning_text", "text": text}]
    if context.encrypted_reasoning and seal is not None:
        item["encrypted_content"] = seal(text, turn_key)
    return item


def output_text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(mid: str, text: str, status: str) -> dict:
    return {"id": mid, "type": "message", "role": "assistant", "status": status, "content": [output_text_part(text)]}


def client_tool(flat_name: str, context: AnswerContext) -> tuple[bool, str, str | None]:
    """An upstream function name -> (is a custom tool, the client's name, its namespace)."""
    custom = flat_name in context.custom_tools
    scoped = context.namespaced.get(flat_name)
    if scoped:
        return custom, scoped[1], scoped[0]
    return custom, flat_name, None


def custom_input(arguments: str) -> str:
    """A custom tool's freeform input from the one-string-parameter function call that
    stood in for it; arguments that did not follow that schema are passed on whole."""
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(parsed, str):
        return parsed
    if isinstance(parsed, dict):
        if isinstance(parsed.get("input"), str):
            return parsed["input"]
        if len(parsed) == 1 and isinstance(next(iter(parsed.values())), str):
            return next(iter(parsed.values()))
    return arguments


def call_item(
    output_index: int, response_id: str, call_id: str, flat_name: str, arguments: str,
    context: AnswerContext, status: str,
) -> dict:
    """A function_call item, or a custom_tool_call item for a custom tool."""
    custom, name, namespace = client_tool(flat_name, context)
    if custom:
        item: dict[str, Any] = {
            "id": item_id("ctc", response_id, output_index), "type": "custom_tool_call",
            "call_id": call_id, "name": name, "input": custom_input(arguments),
        }
    else:
        item = {
            "id": item_id("fc", response_id, output_index), "type": "function_call",
            "call_id": call_id, "name": name, "arguments": arguments, "status": status,
        }
    if namespace is not None:
        item["namespace"] = namespace
    return item


def mark_incomplete(item: dict) -> None:
    """The item a cut answer ended in (only items with a status carry it)."""
    if "status" in item:
        item["status"] = "incomplete"


# ---------------------------------------------------------------- the response envelope


def response_object(
    *,
    response_id: str,
    created_at: int,
    model: str,
    status: str,
    output: list[dict],
    context: AnswerContext,
    usage: dict | None = None,
    incomplete_reason: str | None = None,
    error: dict | None = None,
) -> dict:
    body: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "model": model,
        "output": output,
        "error": error,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "usage": usage,
        # required by the SDK's Response model; the request's own values when it had them
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    body.update(context.echo)
    return body
