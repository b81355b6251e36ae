"""One completion request, from the client's body to the client's answer.

parse -> model map -> translate (when dialects differ) -> Kimi repair -> upstream ->
tap (own the tool-call ids, remember reasoning) -> translate back -> body or SSE stream.
"""

from __future__ import annotations

import json
import logging
import time

from .. import kimi, translate
from ..core import jsonfast
from ..core.dialects import ANTHROPIC, Dialect
from ..core.errors import ClientError, UpstreamError, redact_bytes, upstream_error_message
from ..core.ids import new_turn_key
from ..core.metrics import Metrics
from ..core.reasoning import ReasoningStore
from ..core.settings import Settings, UpstreamConfig, upstream_url
from ..core.tap import tap_for
from ..server.http import EVENT_STREAM, Request, Response, json_response
from ..store.keeper import ReasoningKeeper, tenant_of
from ..translate import StreamTranslator
from ..upstream.client import Upstream, UpstreamResponse
from .headers import answer_headers, upstream_headers
from .outcome import Outcome
from .relay import Relay
from .requests import client_key, error_response

log = logging.getLogger("rawproxy")

# Upstream answers that say "not now, try elsewhere": with another upstream left for the
# model, the request goes there instead of the client hearing them.
FAILOVER_STATUSES = frozenset({429, 500, 502, 503, 529})


class Failover(Exception):
    """Raised instead of answering when another upstream may serve the request: this one
    could not be reached, timed out before its first byte, or answered a FAILOVER_STATUS.
    Nothing has reached the client."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # "connect" (no answer) or the upstream's status
        self.message = message


class Completion:
    """The completion route for one client dialect against one upstream."""

    def __init__(self, settings: Settings, upstream: Upstream, store: ReasoningKeeper | ReasoningStore, client: Dialect,
                 metrics: Metrics | None = None, config: UpstreamConfig | None = None) -> None:
        self.settings = settings
        self.upstream = upstream
        self.reasoning = store if isinstance(store, ReasoningKeeper) else ReasoningKeeper(store)
        self.client = client
        self.metrics = metrics
        self.config = config if config is not None else settings.upstream_list()[0]
        self.upstream_format = self.config.format
        self.url = upstream_url(self.config.base_url, self.config.format)
        self.api_key = self.config.api_key
        # Redacted from every byte of an upstream's answer that reaches a client: some
        # upstreams quote the key they were sent.
        self.secrets: tuple[str, ...] = (self.api_key,) if self.api_key else ()
        # One tenant for everyone only when no upstream forwards the client's own key and
        # clients present no access keys; decided over all upstreams, so a conversation
        # finds its reasoning again whichever upstream answers its next turn.
        self.one_tenant = not settings.access_keys and all(u.api_key for u in settings.upstream_list())

    def _model(self, client_model: str) -> str:
        return self.config.rename(self.settings.model_map.map(client_model))

    def _is_kimi(self, model: str) -> bool:
        return self.config.kimi if self.config.kimi is not None else self.settings.is_kimi(model)

    async def __call__(self, request: Request, body: dict, outcome: Outcome, *, last: bool = True) -> Response:
        """`last=False`: raise Failover rather than answer a failure another upstream may not have."""
        stream = body.get("stream") is True
        # An OpenAI field (checked by validate_openai); from an Anthropic client it means nothing.
        options = body.get("stream_options") if self.client != ANTHROPIC else None
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        client_model = body["model"]
        body["model"] = self._model(client_model)
        outcome.model = body["model"]
        if self.client != self.upstream_format:
            body = self._translate_request(body)
        store = self.store_for(request)
        if self._is_kimi(body["model"]):
            await self.repair(body, outcome, store)
        payload = jsonfast.dumps_bytes(body)
        if self.settings.debug:
            log.debug("upstream request %s model=%s (client asked for %s) repairs=%s",
                      self.url, body["model"], client_model, ",".join(outcome.repairs) or "-")
        headers = upstream_headers(request, self.upstream_format, self.api_key, stream,
                                   not self.settings.access_keys)
        outcome.sent_upstream_at = time.perf_counter()
        try:
            up = await self.upstream.send("POST", self.url, headers, payload)
        except UpstreamError as exc:
            if last:
                raise
            raise Failover("connect", exc.message) from None
        outcome.upstream_status = up.status
        if not last and up.status in FAILOVER_STATUSES:
            await up.aclose()
            raise Failover(str(up.status), f"upstream {up.where} answered {up.status}")
        if up.status >= 400:
            return await self._upstream_error(up)
        if up.status >= 300:
            await up.aclose()
            raise self._unusable("redirect", f"upstream {up.where} answered {up.status}, a redirect the proxy does "
                                             "not follow: check the upstream URL")
        turn_key = new_turn_key()
        tap = tap_for(self.upstream_format, turn_key, "toolu" if self.client == ANTHROPIC else "call")
        outcome.usage = tap.usage  # the same object: a stream's usage is there by its end
        ctype = (up.header(b"content-type") or b"").lower()
        if stream and ctype.startswith(b"text/event-stream"):
            translator = self._stream_translator(client_model, turn_key, include_usage)
            relay = Relay(up, tap, translator, self.client, store, outcome, self.metrics,
                          secrets=self.secrets, max_event_bytes=self.settings.max_event_bytes)
            outcome.streaming = True
            return Response(200, [EVENT_STREAM, (b"cache-control", b"no-cache")] + answer_headers(up), stream=relay)
        raw = await up.read()
        if stream:
            raise UpstreamError(f"upstream {up.where} answered a streaming request with "
                                f"{ctype.decode('latin-1') or 'no content type'}, not an event stream")
        try:
            answer = jsonfast.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            raise self._unusable("malformed", f"upstream {up.where} answered with a body that is not JSON") from None
        problem = _completion_problem(answer, self.upstream_format)
        if problem and isinstance(answer, dict) and answer.get("error"):  # an error body sent as a success
            message = upstream_error_message(raw, self.secrets)
            raise self._unusable("malformed", f"upstream {up.where} answered {up.status} with an error: {message}")
        if problem:
            raise self._unusable("malformed", f"upstream {up.where} answered {up.status} with {problem}, "
                                              "not a completion")
        try:
            tap.message(answer)
            if self.client != self.upstream_format:
                answer = self._translate_response(answer, turn_key)
        except (TypeError, AttributeError, KeyError, ValueError, IndexError):  # a field of the wrong type, deeper down
            raise self._unusable("malformed", f"upstream {up.where} answered {up.status} with a completion the "
                                              "proxy could not read") from None
        remembered = tap.remembered()
        if remembered is not None:
            await store.put(turn_key, remembered)
        answer["model"] = client_model
        data = json.dumps(answer, ensure_ascii=False).encode()
        return json_response(200, redact_bytes(data, self.secrets), answer_headers(up))

    async def count_tokens(self, request: Request, body: dict, outcome: Outcome) -> Response:
        """Anthropic's count_tokens, on the repaired request (what the model will see)."""
        if self.upstream_format != ANTHROPIC:
            # Claude Code falls back to its own estimate on a non-2xx answer; a made-up
            # {"input_tokens": 0} would break its compaction (docs/protocols.md section 1).
            raise ClientError("count_tokens is not offered by the OpenAI-format upstream", 404)
        body["model"] = self._model(body["model"])
        outcome.model = body["model"]
        if self._is_kimi(body["model"]):
            await self.repair(body, outcome, self.store_for(request))
        headers = upstream_headers(request, ANTHROPIC, self.api_key, False, not self.settings.access_keys)
        up = await self.upstream.send("POST", self.url + "/count_tokens", headers, json.dumps(body).encode())
        outcome.upstream_status = up.status
        raw = await up.read()
        if up.status >= 400:
            return error_response(ANTHROPIC, up.status, upstream_error_message(raw, self.secrets))
        if up.status >= 300:
            raise self._unusable("redirect", f"upstream {up.where} answered {up.status}, a redirect the proxy does "
                                             "not follow: check the upstream URL")
        return json_response(up.status, redact_bytes(raw, self.secrets))

    def tenant_for(self, request: Request) -> str:
        """Whose remembered reasoning this request may use: the credential behind it (a
        digest, never the key). The access key when clients present one, else the client's
        own key that is forwarded; behind one upstream key and no access keys, every
        client is the same tenant."""
        if not self.one_tenant:
            return tenant_of(client_key(request))
        return tenant_of(None)

    def store_for(self, request: Request) -> ReasoningStore:
        """The store as this request's tenant sees it: its own turns only."""
        return self.reasoning.scoped(self.tenant_for(request))

    async def repair(self, body: dict, outcome: Outcome, store: ReasoningStore) -> None:
        """The Kimi repair in the upstream's dialect, with the reasoning the store recalls."""
        if self.upstream_format == ANTHROPIC:
            keys = kimi.turn_keys_anthropic(body)
            recalled = await store.get_many(keys) if keys else {}
            outcome.repairs = kimi.repair_anthropic(body, recalled)
        else:
            keys = kimi.turn_keys_openai(body)
            recalled = await store.get_many(keys) if keys else {}
            outcome.repairs = kimi.repair_openai(body, recalled)

    async def _upstream_error(self, up: UpstreamResponse) -> Response:
        try:
            raw = await up.read()
        except UpstreamError as exc:
            raw = exc.message.encode()
        message = upstream_error_message(raw, self.secrets)
        return error_response(self.client, up.status, message, answer_headers(up))

    def _unusable(self, kind: str, message: str) -> UpstreamError:
        """An upstream answer the proxy cannot pass on: counted by `kind`; a 502 to the client."""
        if self.metrics is not None:
            self.metrics.upstream_errors.inc(kind)
        return UpstreamError(message)

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


def _completion_problem(answer: object, upstream_format: str) -> str | None:
    """What keeps a 200 body from being a completion in `upstream_format` (its outline
    only: the fields every reader of it walks), or None."""
    if not isinstance(answer, dict):
        return f"a JSON {type(answer).__name__}"
    name = "content" if upstream_format == ANTHROPIC else "choices"
    items = answer.get(name)
    if not isinstance(items, list):
        return f"`{name}` that is not a list" if name in answer else f"no `{name}`"
    if not all(isinstance(item, dict) for item in items):
        return f"`{name}` that is not a list of objects"
    if upstream_format != ANTHROPIC and not all(isinstance(c.get("message", {}), dict) for c in items):
        return "a choice whose `message` is not an object"
    return None
