"""The dialects the proxy speaks, by name, and the error each one's SDK understands.

Clients speak one of the client dialects; upstreams speak one of the upstream formats
(Kimi's doors speak Anthropic Messages or OpenAI Chat Completions). An error reaches a
client as a JSON body before the first byte and as a stream event after it, always in
its own dialect's shape (docs/protocols.md sections 1 and 2).
"""

from __future__ import annotations

from typing import Final, Literal

from .errors import anthropic_error, openai_error
from .sse import encode_event

UpstreamFormat = Literal["anthropic", "openai"]
Dialect = Literal["anthropic", "openai"]

ANTHROPIC: Final = "anthropic"
OPENAI: Final = "openai"


def error_body(dialect: Dialect, status: int, message: str) -> bytes:
    return anthropic_error(status, message) if dialect == ANTHROPIC else openai_error(status, message)


def error_event(dialect: Dialect, status: int, message: str) -> bytes:
    """An error after the first byte: the shape each SDK raises on mid-stream."""
    if dialect == ANTHROPIC:
        return encode_event(anthropic_error(status, message).decode(), "error")
    return encode_event(openai_error(status, message).decode())
