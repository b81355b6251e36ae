"""Helpers the request and response translators share."""

from __future__ import annotations

import json
from typing import Any

from ..core.errors import ClientError
from ..core.ids import sanitize_tool_id

# anthropic_to_openai_request marks an `is_error` tool result with this prefix (OpenAI tool
# messages have no error flag); openai_to_anthropic_request turns it back into the flag.
TOOL_ERROR_PREFIX = "[tool error] "


def text_or_refuse(content: Any, where: str) -> str:
    """System content (str or text blocks) as one string, blocks joined by blank lines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict) and isinstance(block.get("text"), str):
                parts.append(block["text"])
            else:
                raise ClientError(f"{where}: only text content is supported, got {kind_of(block)}")
        return "\n\n".join(p for p in parts if p)
    raise ClientError(f"{where}: content must be a string or a list of blocks")


def kind_of(block: Any) -> str:
    return repr(block.get("type")) if isinstance(block, dict) else type(block).__name__


def openai_tool_call(block: dict) -> dict:
    """An Anthropic tool_use block as an OpenAI tool call; invalid ids sanitised the same
    way everywhere, so a tool_use and its tool_result keep matching."""
    arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
    return {
        "id": sanitize_tool_id(str(block.get("id", ""))),
        "type": "function",
        "function": {"name": block.get("name", ""), "arguments": arguments},
    }


def tool_use_block(call: dict, args: Any) -> dict:
    """An OpenAI tool call, its arguments already parsed, as an Anthropic tool_use block."""
    name = (call.get("function") or {}).get("name", "")
    return {"type": "tool_use", "id": sanitize_tool_id(str(call.get("id", ""))), "name": name, "input": args}
