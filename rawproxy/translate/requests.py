"""Request bodies: Anthropic Messages <-> OpenAI Chat Completions (docs/protocols.md section 3).

Pure functions over parsed JSON that never mutate their input. What the other dialect cannot
express raises `ClientError` (a 400 for the client). Anthropic fields that only tune the
Anthropic API (`context_management`, `output_config.effort`, `cache_control`, `top_k`, ...)
are dropped: only fields with an OpenAI meaning are copied.

This module holds the Anthropic -> OpenAI direction; `requests_openai` the reverse.
"""

from __future__ import annotations

import json
from typing import Any

from ..core.errors import ClientError
from ..core.ids import sanitize_tool_id
from ._content import TOOL_ERROR_PREFIX, kind_of, openai_tool_call, text_or_refuse
from .requests_openai import DEFAULT_MAX_TOKENS, openai_to_anthropic_request

__all__ = ["DEFAULT_MAX_TOKENS", "anthropic_to_openai_request", "openai_to_anthropic_request"]


def _flatten_result(content: Any) -> tuple[str, list[dict]]:
    """tool_result content -> (text, image parts). Unknown block types become text, never
    dropped (a `tool_reference` carries a tool name the model needs to see)."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[dict] = []
    for block in content if isinstance(content, list) else [content]:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "image":
            images.append(_image_part(block))
            texts.append("[image attached below]")
        elif kind == "tool_reference":
            texts.append(f"[tool loaded: {block.get('tool_name', '')}]")
        elif kind == "document" and (block.get("source") or {}).get("type") == "text":
            texts.append(block["source"].get("data") or "")
        elif isinstance(block, str):
            texts.append(block)
        else:  # e.g. search_result: its JSON is the most faithful text form
            rest = {k: v for k, v in block.items() if k != "cache_control"} if isinstance(block, dict) else block
            texts.append(json.dumps(rest, ensure_ascii=False))
    return "\n\n".join(t for t in texts if t), images


def _image_part(block: dict) -> dict:
    src = block.get("source") or {}
    if src.get("type") == "base64":
        url = f"data:{src.get('media_type', 'image/png')};base64,{src.get('data', '')}"
    elif src.get("type") == "url":
        url = src.get("url", "")
    else:
        raise ClientError(f"image source type {src.get('type')!r} cannot be sent to an OpenAI upstream")
    return {"type": "image_url", "image_url": {"url": url}}


def _user_parts(block: dict, where: str) -> dict:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": block.get("text", "")}
    if kind == "image":
        return _image_part(block)
    if kind == "document":
        src = block.get("source") or {}
        if src.get("type") == "text":
            return {"type": "text", "text": src.get("data", "")}
        if src.get("type") == "base64":
            data_url = f"data:{src.get('media_type', 'application/pdf')};base64,{src.get('data', '')}"
            name = block.get("title") or "document.pdf"
            return {"type": "file", "file": {"file_data": data_url, "filename": name}}
    raise ClientError(f"{where}: content block {kind_of(block)} cannot be sent to an OpenAI upstream")


def _a2o_user(content: Any, where: str) -> list[dict]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise ClientError(f"{where}: content must be a string or a list of blocks")
    # Tool results first, one `tool` message each, then the user's own content (section 3).
    tools: list[dict] = []
    parts: list[dict] = []
    for block in content:
        if isinstance(block, str):
            block = {"type": "text", "text": block}
        if not isinstance(block, dict):
            raise ClientError(f"{where}: content blocks must be objects")
        if block.get("type") == "tool_result":
            text, images = _flatten_result(block.get("content"))
            if block.get("is_error"):
                text = TOOL_ERROR_PREFIX + text
            call_id = sanitize_tool_id(str(block.get("tool_use_id", "")))
            tools.append({"role": "tool", "tool_call_id": call_id, "content": text})
            parts.extend(images)  # OpenAI tool messages take text only: images follow as user parts
        else:
            part = _user_parts(block, where)
            if part["type"] != "text" or part["text"]:  # never forward empty text
                parts.append(part)
    out = tools
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _a2o_assistant(content: Any, where: str) -> dict:
    msg: dict[str, Any] = {"role": "assistant"}
    if isinstance(content, str):
        msg["content"] = content
        return msg
    if not isinstance(content, list):
        raise ClientError(f"{where}: content must be a string or a list of blocks")
    texts, thoughts, calls = [], [], []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            if block.get("text"):
                texts.append(block["text"])
        elif kind == "thinking":
            if block.get("thinking"):
                thoughts.append(block["thinking"])
        elif kind == "redacted_thinking":
            continue  # opaque to anyone but Anthropic: no meaning to an OpenAI upstream
        elif kind == "tool_use":
            calls.append(openai_tool_call(block))
        else:
            raise ClientError(f"{where}: assistant block {kind_of(block)} cannot be sent to an OpenAI upstream")
    if texts or not calls:  # Kimi 400s on empty content next to tool calls (docs/kimi.md section 2)
        msg["content"] = "\n\n".join(texts)
    if thoughts:
        msg["reasoning_content"] = "\n\n".join(thoughts)
    if calls:
        msg["tool_calls"] = calls
    return msg


def _a2o_tool(tool: dict) -> dict:
    if tool.get("type") not in (None, "custom") or "input_schema" not in tool:
        raise ClientError(
            f"tool {tool.get('name')!r} of type {tool.get('type')!r} is an Anthropic server tool;"
            " an OpenAI upstream cannot run it"
        )
    fn: dict[str, Any] = {"name": tool.get("name", "")}
    if tool.get("description"):
        fn["description"] = tool["description"]
    fn["parameters"] = tool["input_schema"]
    if "strict" in tool:
        fn["strict"] = tool["strict"]
    return {"type": "function", "function": fn}  # cache_control, defer_loading...: Anthropic-only


def _a2o_tool_choice(choice: dict, out: dict) -> None:
    kind = choice.get("type")
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}
    else:
        raise ClientError(f"tool_choice type {kind!r} is not supported")
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False


def anthropic_to_openai_request(body: dict) -> dict:
    out: dict[str, Any] = {"model": body.get("model")}
    messages: list[dict] = []
    system = text_or_refuse(body.get("system"), "system")
    if system:
        messages.append({"role": "system", "content": system})
    for i, msg in enumerate(body.get("messages") or []):
        where = f"messages[{i}]"
        role = msg.get("role") if isinstance(msg, dict) else None
        if role == "system":  # Claude Code sends these inside messages: keep them in place
            messages.append({"role": "system", "content": text_or_refuse(msg.get("content"), where)})
        elif role == "user":
            messages.extend(_a2o_user(msg.get("content"), where))
        elif role == "assistant":
            messages.append(_a2o_assistant(msg.get("content"), where))
        else:
            raise ClientError(f"{where}: unknown role {role!r}")
    out["messages"] = messages
    if "max_tokens" in body:
        out["max_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p"):  # the Kimi repair drops them where the model forbids them
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    user = (body.get("metadata") or {}).get("user_id")
    if user:
        out["user"] = user
    if body.get("tools"):
        out["tools"] = [_a2o_tool(t) for t in body["tools"]]
    if isinstance(body.get("tool_choice"), dict):
        _a2o_tool_choice(body["tool_choice"], out)
    thinking = body.get("thinking")
    if isinstance(thinking, dict):
        # Kimi's OpenAI-format switch (docs/kimi.md section 2): adaptive means "think".
        kind = thinking.get("type")
        out["thinking"] = {"type": "disabled" if kind == "disabled" else "enabled"}
    fmt = (body.get("output_config") or {}).get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        # Structured output changes the answer, unlike `effort`: keep it, do not drop it.
        schema = {"name": "output", "schema": fmt.get("schema", {}), "strict": True}
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out
