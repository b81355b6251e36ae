"""POST /v1/responses: the OpenAI Responses API as a third client dialect.

A Responses request is translated to Chat Completions (translate/responses_api) and then
runs the chat completion route unchanged: model map, translation to an Anthropic-format
upstream when that is what the upstream speaks, the Kimi repair, the tap and the store.
Its answer, whole or streamed, is translated back into a `response` object or Responses
events. Two things are the Responses API's own and live here:

- `previous_response_id`: a stored response's input and output are remembered in the
  reasoning store (bounded, expiring, per tenant, like reasoning) and spliced in front of
  the next request's input; `store: false` responses are not remembered.
- sealed reasoning: a stateless client (Codex) gets its reasoning back as
  `encrypted_content` it can return next turn (core/seal.py), so the real reasoning is
  restored even where the store has none.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from ..core.dialects import OPENAI
from ..core.errors import ClientError
from ..core.reasoning import Reasoning, ReasoningStore
from ..core.seal import ReasoningSeal
from ..core.sse import SSEParser
from ..server.http import BodyStream, Request, Response, StreamAborted, json_response
from ..translate.responses_api import (
    ChatToResponsesStream,
    chat_to_responses_response,
    new_response_id,
    responses_to_chat_request,
)
from .outcome import Outcome
from .pipeline import Completion
from .routing import Router

log = logging.getLogger("rawproxy")

# A stored response is remembered under this prefix, beside the turn keys of reasoning.
_RESPONSE_KEY = "response:"
_DROPPED_HEADER = b"x-rawproxy-dropped-tools"


class ResponsesRoute:
    def __init__(self, chat: Completion | Router, seal: ReasoningSeal) -> None:
        if chat.client != OPENAI:
            raise ValueError("the Responses route runs on the chat completion route")
        self.chat = chat
        self.seal = seal

    async def __call__(self, request: Request, body: dict, outcome: Outcome) -> Response:
        store = self.chat.store_for(request)
        tenant = self.chat.tenant_for(request)
        previous = body.get("previous_response_id")
        if previous is not None:
            body = await self._expand(body, previous, store)
        translated = responses_to_chat_request(body, unseal=lambda token: self.seal.open(tenant, token))
        response_id = new_response_id()

        def seal(text: str, turn_key: str | None) -> str:
            return self.seal.seal(tenant, text, turn_key)

        extra: list[tuple[bytes, bytes]] = []
        if translated.dropped_tools:
            # Hosted tools (web_search, ...) no Kimi upstream can run: left out, and said so.
            extra.append((_DROPPED_HEADER, ",".join(translated.dropped_tools).encode()))
            log.debug("responses: hosted tools left out of the upstream request: %s",
                      ", ".join(translated.dropped_tools))
        if translated.skipped_items:
            log.debug("responses: input items with no upstream form left out: %s",
                      ", ".join(translated.skipped_items))
        model: str = body["model"]  # requests.validate_responses has checked it
        remember = translated.store
        items = _input_items(body)

        answer = await self.chat(request, translated.chat, outcome)
        answer.headers.extend(extra)
        if answer.status >= 400:
            return answer  # the chat route's error body is the Responses error shape too
        if answer.stream is None:
            chat = json.loads(answer.body)
            doc = chat_to_responses_response(chat, model, translated.context, response_id=response_id,
                                             turn_key=None, seal=seal)
            if remember:
                await self._remember(store, response_id, items, doc.get("output") or [])
            headers = [h for h in answer.headers if h[0] != b"content-type"]
            return json_response(200, json.dumps(doc, ensure_ascii=False).encode(), headers)
        stream = ChatToResponsesStream(model, translated.context, response_id=response_id, seal=seal)
        relay = _ResponsesRelay(answer.stream, stream, self._remember if remember else None, store,
                                response_id, items)
        return Response(answer.status, answer.headers, stream=relay)

    async def _expand(self, body: dict, previous: object, store: ReasoningStore) -> dict:
        if not isinstance(previous, str) or not previous:
            raise ClientError("previous_response_id must be a non-empty string")
        found = await store.get_many([_RESPONSE_KEY + previous])
        stored = found.get(_RESPONSE_KEY + previous)
        if stored is None:
            raise ClientError(f"previous_response_id {previous!r} is unknown or has expired: "
                              "send the whole conversation in input instead")
        conversation = json.loads(stored.text)
        expanded = dict(body)
        expanded.pop("previous_response_id", None)
        expanded["input"] = conversation + _input_items(body)
        return expanded

    async def _remember(self, store: ReasoningStore, response_id: str, items: list, output: list) -> None:
        """The conversation so far, for a next request that names this response."""
        # Output items go back as they came: the request side reads them as input items.
        history = items + [item for item in output if isinstance(item, dict)]
        await store.put(_RESPONSE_KEY + response_id, Reasoning(json.dumps(history, ensure_ascii=False)))


def _input_items(body: dict) -> list:
    """A request's input as a list of items (a string is one user message)."""
    items = body.get("input")
    if isinstance(items, str):
        return [{"type": "message", "role": "user", "content": items}]
    return list(items) if isinstance(items, list) else []


class _ResponsesRelay:
    """The chat route's stream, re-framed as Responses events.

    The chat relay underneath does the upstream work (tap, store, translation from an
    Anthropic-format upstream); this only turns its chat chunks into Responses events, one
    write per chunk it receives, and ends with exactly one terminal event.
    """

    __slots__ = ("_chat", "_translator", "_remember", "_store", "_response_id", "_items", "_gen")

    def __init__(self, chat: BodyStream, translator: ChatToResponsesStream, remember, store: ReasoningStore,
                 response_id: str, items: list) -> None:
        self._chat = chat
        self._translator = translator
        self._remember = remember
        self._store = store
        self._response_id = response_id
        self._items = items
        self._gen: AsyncIterator[bytes] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        self._gen = self._run()
        return self._gen

    def cut_event(self, status: int, message: str) -> bytes:
        """`response.failed` with this response's id and next sequence number, for a stream
        the server cuts (request ceiling, shutdown): never a stream that just stops."""
        return b"".join(self._translator.fail(message))

    async def aclose(self) -> None:
        try:
            if self._gen is not None:
                await self._gen.aclose()  # type: ignore[attr-defined]
        finally:
            await self._chat.aclose()

    async def _run(self) -> AsyncIterator[bytes]:
        parser = SSEParser()
        translator = self._translator
        aborted: StreamAborted | None = None
        try:
            async for chunk in self._chat:
                out: list[bytes] = []
                for event in parser.feed(chunk):
                    out.extend(translator.feed(event))
                if out:
                    yield b"".join(out)
        except StreamAborted as exc:
            aborted = exc  # the chat relay ended with an error chunk: translated to response.failed above
        tail = translator.close() if translator.ending is None else []
        if tail:
            yield b"".join(tail)
        if translator.ending == "complete" and self._remember is not None and translator.final_response:
            await self._remember(self._store, self._response_id, self._items,
                                 translator.final_response.get("output") or [])
        if aborted is not None or translator.ending != "complete":
            raise StreamAborted(str(aborted) if aborted else "the response failed")

