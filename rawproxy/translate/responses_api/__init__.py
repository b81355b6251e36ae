"""The OpenAI Responses API as a client dialect: pure translation to and from Chat Completions.

A Responses request becomes a Chat Completions request; a Chat Completions answer (whole or
streamed) becomes a Responses answer. An Anthropic-format upstream is reached by chaining
with the Chat <-> Anthropic translators, so nothing here knows Anthropic.
"""

from ._common import AnswerContext, Seal, Unseal, new_response_id
from .answer import chat_to_responses_response
from .request import TranslatedRequest, responses_to_chat_request
from .stream import ChatToResponsesStream

__all__ = [
    "AnswerContext",
    "ChatToResponsesStream",
    "Seal",
    "TranslatedRequest",
    "Unseal",
    "chat_to_responses_response",
    "new_response_id",
    "responses_to_chat_request",
]
