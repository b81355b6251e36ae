"""Pure, sans-IO translation between Anthropic Messages and OpenAI Chat Completions.

Knows nothing of Kimi and does no IO; see docs/protocols.md section 3. May import
`rawproxy.core` only.
"""

from .requests import anthropic_to_openai_request, openai_to_anthropic_request
from .responses import anthropic_to_openai_response, openai_to_anthropic_response
from .streams import AnthropicToOpenAIStream, OpenAIToAnthropicStream, PassThrough, StreamEnding, StreamTranslator

__all__ = [
    "AnthropicToOpenAIStream",
    "OpenAIToAnthropicStream",
    "PassThrough",
    "StreamEnding",
    "StreamTranslator",
    "anthropic_to_openai_request",
    "anthropic_to_openai_response",
    "openai_to_anthropic_request",
    "openai_to_anthropic_response",
]
