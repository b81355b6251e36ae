"""Reading the fields of a message the same way everywhere, whichever peer wrote it."""

from __future__ import annotations

from typing import Any


def reasoning_of(obj: dict) -> str:
    """The reasoning an OpenAI-format message or delta carries, or "": Kimi, Moonshot and
    DeepSeek spell it `reasoning_content`, vLLM and OpenRouter `reasoning`."""
    value = obj.get("reasoning_content")
    if not isinstance(value, str) or not value:
        value = obj.get("reasoning")
    return value if isinstance(value, str) else ""


def text_of(content: Any, separator: str = "") -> str:
    """The text of a content value: a string as it is, or the `text` of each text part of a
    list (other parts, such as images, carry none) joined by `separator`; else ""."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return separator.join(
            part["text"] for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
            and part.get("type", "text") in ("text", "input_text", "output_text")
        )
    return ""
