"""Request bodies, OpenAI Chat Completions -> Anthropic Messages (docs/protocols.md section 3:
"the reverse" of the Anthropic -> OpenAI table). Re-exported by `requests`.
"""

from __future__ import annotations

from typing import Any

from ..core import client_json
from ..core.errors import ClientError
from ..core.ids import make_signature, sanitize_tool_id, turn_key_of
from ..core.messages import reasoning_of
from ._content import TOOL_ERROR_PREFIX, kind_of, text_or_refuse, tool_use_block

# Anthropic requires max_tokens; used when an OpenAI client gives no limit (docs/kimi.md
# section 2: k2.5's own default, and reasoning shares the budget).
DEFAULT_MAX_TOKENS = 32768


def _o2a_image(url: str) -> dict:
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        media_type = head[5:].split(";")[0] or "image/png"
        if ";base64" not in head:
            raise ClientError("image data: URLs must be base64-encoded")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _o2a_parts(content: Any, where: str) -> list[dict]:
    """OpenAI user content -> Anthropic blocks; empty text dropped (Anthropic rejects it)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise ClientError(f"{where}: content must be a string or a list of parts")
    blocks = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "input_text", "refusal"):
            text = part.get("text", part.get("refusal", ""))
            if text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            image = part.get("image_url")
            blocks.append(_o2a_image(image.get("url", "") if isinstance(image, dict) else str(image)))
        elif kind == "file" and str((part.get("file") or {}).get("file_data", "")).startswith("data:"):
            head, _, data = part["file"]["file_data"].partition(",")
            media = head[5:].split(";")[0] or "application/pdf"
            blocks.append({"type": "document", "source": {"type": "base64", "media_type": media, "data": data}})
        else:
            raise ClientError(f"{where}: content part {kind_of(part)} cannot be sent to an Anthropic upstream")
    return blocks


def _o2a_tool_result(msg: dict, where: str) -> dict:
    content = msg.get("content")
    text = content if isinstance(content, str) else text_or_refuse(content, where)
    call_id = sanitize_tool_id(str(msg.get("tool_call_id", "")))
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    if text.startswith(TOOL_ERROR_PREFIX):  # undo the marker anthropic_to_openai_request adds
        text, block["is_error"] = text[len(TOOL_ERROR_PREFIX):], True
    if text:
        block["content"] = text
    return block


def _o2a_assistant(msg: dict, where: str) -> list[dict]:
    blocks: list[dict] = []
    calls = msg.get("tool_calls") or []
    reasoning = reasoning_of(msg)
    if reasoning:
        first_id = calls[0].get("id") if calls and isinstance(calls[0], dict) else None
        # A proxy-made signature keyed by the turn; the Kimi repair swaps in a stored
        # upstream signature when it has one.
        signature = make_signature(turn_key_of(first_id or ""))
        blocks.append({"type": "thinking", "thinking": reasoning, "signature": signature})
    blocks.extend(_o2a_parts(msg.get("content"), where))
    for k, call in enumerate(calls):
        fn = call.get("function") or {}
        raw = fn.get("arguments") or "{}"
        try:
            # Strict: the parsed arguments go to the upstream as JSON, so NaN, lone
            # surrogates or absurd nesting inside the string are refused here.
            field = f"{where}.tool_calls[{k}].function.arguments"
            args = client_json.loads(raw, field, field) if isinstance(raw, str) else raw
        except ValueError:
            problem = f"{where}: tool call {fn.get('name')!r} has arguments that are not valid JSON"
            raise ClientError(problem) from None
        if not isinstance(args, dict):
            raise ClientError(f"{where}: tool call {fn.get('name')!r} arguments must be a JSON object")
        blocks.append(tool_use_block(call, args))
    return blocks


def _o2a_tool(tool: dict) -> dict:
    if tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
        raise ClientError(f"tool type {tool.get('type')!r} cannot be sent to an Anthropic upstream")
    fn = tool["function"]
    out: dict[str, Any] = {"name": fn.get("name", "")}
    if fn.get("description"):
        out["description"] = fn["description"]
    out["input_schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
    if "strict" in fn:
        out["strict"] = fn["strict"]
    return out


def _o2a_tool_choice(choice: Any) -> dict:
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"type": "tool", "name": choice["function"].get("name", "")}
    raise ClientError(f"tool_choice {choice!r} is not supported")


def _check_expressible(body: dict) -> None:
    n = body.get("n")
    if isinstance(n, (int, float)) and n > 1:
        raise ClientError("n > 1 is not supported: the upstream returns one choice per request")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type", "text") != "text":
        raise ClientError(f"response_format {fmt.get('type')!r} is not supported by this upstream")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise ClientError("logprobs are not supported by this upstream")
    if "audio" in (body.get("modalities") or []):
        raise ClientError("audio output is not supported by this upstream")


def openai_to_anthropic_request(body: dict) -> dict:
    _check_expressible(body)
    system: list[str] = []
    messages: list[dict] = []
    results: list[dict] = []  # tool_result blocks waiting for their user turn

    def flush(extra: list[dict]) -> None:
        if results or extra:
            messages.append({"role": "user", "content": results + extra})
            results.clear()

    for i, msg in enumerate(body.get("messages") or []):
        where = f"messages[{i}]"
        role = msg.get("role") if isinstance(msg, dict) else None
        if role in ("system", "developer"):
            text = text_or_refuse(msg.get("content"), where)
            if not messages and not results:
                system.append(text)  # leading: the top-level system prompt
            else:
                flush([])
                messages.append({"role": "system", "content": text})  # in place; kimi/ folds it
        elif role == "tool":
            results.append(_o2a_tool_result(msg, where))
        elif role == "user":
            content = msg.get("content")
            if isinstance(content, str) and not results:
                messages.append({"role": "user", "content": content})
            else:  # text after tool results joins their user turn (results first)
                blocks = _o2a_parts(content, where)
                if results or blocks:
                    flush(blocks)
                else:
                    messages.append({"role": "user", "content": ""})
        elif role == "assistant":
            flush([])
            blocks = _o2a_assistant(msg, where)
            if blocks:  # a message with nothing in it carries nothing to keep
                messages.append({"role": "assistant", "content": blocks})
        else:
            raise ClientError(f"{where}: role {role!r} cannot be sent to an Anthropic upstream")
    flush([])

    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if any(system):
        out["system"] = "\n\n".join(s for s in system if s)
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    out["max_tokens"] = limit if isinstance(limit, int) and limit > 0 else DEFAULT_MAX_TOKENS
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("user"):
        out["metadata"] = {"user_id": body["user"]}
    if body.get("tools"):
        out["tools"] = [_o2a_tool(t) for t in body["tools"]]
    choice = _o2a_tool_choice(body["tool_choice"]) if body.get("tool_choice") is not None else None
    if body.get("parallel_tool_calls") is False and (choice or {}).get("type") != "none":
        choice = choice or {"type": "auto"}
        choice["disable_parallel_tool_use"] = True
    if choice:
        out["tool_choice"] = choice
    effort = body.get("reasoning_effort")
    if isinstance(body.get("thinking"), dict):
        out["thinking"] = dict(body["thinking"])  # a copy: the Kimi repair edits the output
    elif effort == "none":
        out["thinking"] = {"type": "disabled"}
    if isinstance(effort, str) and effort != "none":
        # Anthropic's own effort knob; minimal/xhigh folded onto its low..max scale.
        out["output_config"] = {"effort": {"minimal": "low", "xhigh": "max"}.get(effort, effort)}
    if body.get("stream"):
        out["stream"] = True
    return out
