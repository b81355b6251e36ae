"""Non-streaming answers, Chat Completions -> a Responses `response` object.

Output items come in the order reasoning, message, calls: the order a Kimi stream gives
them in, so the streamed and the whole answer agree.
"""

from __future__ import annotations

import json
import time

from ...core.ids import new_turn_key, tool_call_id
from ...core.messages import reasoning_of, text_of
from ._common import (
    AnswerContext,
    Seal,
    as_dict,
    as_list,
    as_str,
    call_item,
    item_id,
    mark_incomplete,
    message_item,
    new_response_id,
    outcome,
    reasoning_item,
    response_object,
    responses_usage,
)


def _arguments(fn: dict) -> str:
    raw = fn.get("arguments")
    if isinstance(raw, (dict, list)):  # servers that send them parsed
        return json.dumps(raw, ensure_ascii=False)
    return raw if isinstance(raw, str) and raw else "{}"  # clients json-parse them: never empty


def chat_to_responses_response(
    body: dict,
    model: str,
    context: AnswerContext | None = None,
    *,
    response_id: str | None = None,
    created_at: int | None = None,
    turn_key: str | None = None,
    seal: Seal | None = None,
) -> dict:
    """A Chat Completions answer -> a Responses `response` object.

    `model` is the client's model name; `turn_key` keys this answer (passed to `seal`, and
    used for call ids the upstream left out); `seal` makes encrypted_content when the
    request included reasoning.encrypted_content.
    """
    context = context or AnswerContext()
    response_id = response_id or new_response_id()
    choices = as_list(body.get("choices"))
    choice = as_dict(choices[0] if choices else None)
    msg = as_dict(choice.get("message"))

    output: list[dict] = []
    reasoning = reasoning_of(msg)
    if reasoning:
        output.append(reasoning_item(item_id("rs", response_id, len(output)), reasoning, context, seal, turn_key))
    text = text_of(msg.get("content"))  # some servers answer with parts
    if text:
        output.append(message_item(item_id("msg", response_id, len(output)), text, "completed"))
    for k, call in enumerate(c for c in as_list(msg.get("tool_calls")) if isinstance(c, dict)):
        fn = as_dict(call.get("function"))
        call_id = as_str(call.get("id")) or tool_call_id(turn_key or new_turn_key(), k, "call")
        output.append(call_item(len(output), response_id, call_id, as_str(fn.get("name")), _arguments(fn), context, "completed"))

    status, reason = outcome(choice.get("finish_reason"))
    if status == "incomplete" and output:
        mark_incomplete(output[-1])  # the cut fell in the last item
    return response_object(
        response_id=response_id,
        created_at=created_at if created_at is not None else int(time.time()),
        model=model,
        status=status,
        output=output,
        context=context,
        usage=responses_usage(body.get("usage") or choice.get("usage")),
        incomplete_reason=reason,
    )
