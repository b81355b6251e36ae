"""One completion request, from the client's body to the client's answer.

parse -> model map -> translate (when dialects differ) -> Kimi repair -> upstream ->
tap (own the tool-call ids, remember reasoning) -> translate back -> body or SSE stream.
"""

from __future__ import annotations

import json
import logging

from .. import kimi, translate
from ..core.dialects import ANTHROPIC, Dialect
from ..core.errors import ClientError, UpstreamError, redact, upstream_error_message
from ..core.ids import new_turn_key
from ..core.metrics import Metrics
from ..core.reasoning import ReasoningStore
from ..core.settings import Settings, upstream_url
from ..core.tap import tap_for
from ..server.http import EVENT_STREAM, Request, Response, json_response
from ..translate import StreamTranslator
from ..upstream.client import Upstream, UpstreamResponse
from .headers import answer_headers, upstream_headers
from .outcome import Outcome
from .relay import Relay
from .requests import error_response

log = logging.getLogger("rawproxy")


class Completion:
    """The completion route for one client dialect against the configured upstream."""

    def __init__(self, settings: Settings, upstream: Upstream, store: ReasoningStore, client: Dialect,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.upstream = upstream
        self.store = store
        self.client = client
        self.metrics = metrics
        self.upstream_format = settings.upstream_format
        self.url = upstream_url(settings.upstream, settings.upstream_format)

    async def __call__(self, request: Request, body: dict, outcome: Outcome) -> Response:
        stream = body.get("stream") is True
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        client_model = body["model"]
        body["model"] = self.settings.model_map.map(client_model)
        outcome.model = body["model"]
        if self.client != self.upstream_format:
            body = self._translate_request(body)
        if self.settings.is_kimi(body["model"]):
            await self.repair(body, outcome)
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        if self.settings.debug:
            log.debug("upstream request %s model=%s (client asked for %s) repairs=%s",
                      self.url, body["model"], client_model, ",".join(outcome.repairs) or "-")
        headers = upstream_headers(request, self.upstream_format, self.settings.api_key, stream,
                                   not self.settings.access_keys)
        up = await self.upstream.send("POST", self.url, headers, payload)
        outcome.upstream_status = up.status
        if up.status >= 400:
            return await self._upstream_error(up)
        turn_key = new_turn_key()
        tap = tap_for(self.upstream_format, turn_key, "toolu" if self.client == ANTHROPIC else "call")
        ctype = (up.header(b"content-type") or b"").lower()
        if stream and ctype.startswith(b"text/event-stream"):
            translator = self._stream_translator(client_model, turn_key, include_usage)
            relay = Relay(up, tap, translator, self.client, self.store, outcome, self.metrics)
            outcome.streaming = True
            return Response(200, [EVENT_STREAM, (b"cache-control", b"no-cache")] + answer_headers(up), stream=relay)
        raw = await up.read()
        if stream:
            raise UpstreamError(f"upstream answered a streaming request with "
                                f"{ctype.decode('latin-1') or 'no content type'}, not an event stream")
        try:
            answer = json.loads(raw)
        except ValueError:
            raise UpstreamError("upstream answered with a body that is not JSON") from None
        tap.message(answer)
        remembered = tap.remembered()
        if remembered is not None:
            await self.store.put(turn_key, remembered)
        if self.client != self.upstream_format:
            answer = self._translate_response(answer, turn_key)
        answer["model"] = client_model
        return json_response(200, json.dumps(answer, ensure_ascii=False).encode(), answer_headers(up))

    async def count_tokens(self, request: Request, body: dict, outcome: Outcome) -> Response:
        """Anthropic's count_tokens, on the repaired request (what the model will see)."""
        if self.upstream_format != ANTHROPIC:
            # Claude Code falls back to its own estimate on a non-2xx answer; a made-up
            # {"input_tokens": 0} would break its compaction (docs/protocols.md section 1).
            raise ClientError("count_tokens is not offered by the OpenAI-format upstream", 404)
        body["model"] = self.settings.model_map.map(body["model"])
        outcome.model = body["model"]
        if self.settings.is_kimi(body["model"]):
            await self.repair(body, outcome)
        headers = upstream_headers(request, ANTHROPIC, self.settings.api_key, False, not self.settings.access_keys)
        up = await self.upstream.send("POST", self.url + "/count_tokens", headers, json.dumps(body).encode())
        outcome.upstream_status = up.status
        raw = await up.read()
        if up.status >= 400:
            return error_response(ANTHROPIC, up.status, redact(upstream_error_message(raw), self.settings.api_key))
        return json_response(up.status, raw)

    async def repair(self, body: dict, outcome: Outcome) -> None:
        """The Kimi repair in the upstream's dialect, with the reasoning the store recalls."""
        if self.upstream_format == ANTHROPIC:
            keys = kimi.turn_keys_anthropic(body)
            recalled = await self.store.get_many(keys) if keys else {}
            outcome.repairs = kimi.repair_anthropic(body, recalled)
        else:
            keys = kimi.turn_keys_openai(body)
            recalled = await self.store.get_many(keys) if keys else {}
            outcome.repairs = kimi.repair_openai(body, recalled)

    async def _upstream_error(self, up: UpstreamResponse) -> Response:
        try:
            raw = await up.read()
        except UpstreamError as exc:
            raw = exc.message.encode()
        message = redact(upstream_error_message(raw), self.settings.api_key)
        return error_response(self.client, up.status, message, answer_headers(up))

    def _translate_request(self, body: dict) -> dict:
        if self.client == ANTHROPIC:
            return translate.anthropic_to_openai_request(body)
        return translate.openai_to_anthropic_request(body)

    def _translate_response(self, answer: dict, turn_key: str) -> dict:
        if self.client == ANTHROPIC:
            return translate.openai_to_anthropic_response(answer, turn_key)
        return translate.anthropic_to_openai_response(answer)

    def _stream_translator(self, model: str, turn_key: str, include_usage: bool) -> StreamTranslator:
        if self.client == self.upstream_format:
            return translate.PassThrough(self.client)
        if self.client == ANTHROPIC:
            return translate.OpenAIToAnthropicStream(model, turn_key)
        return translate.AnthropicToOpenAIStream(model, include_usage)
