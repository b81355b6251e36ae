"""One completion request, from the client's body to the client's answer.

parse -> model map -> translate (when dialects differ) -> Kimi repair -> upstream ->
tap (own the tool-call ids, remember reasoning) -> translate back -> body or SSE stream.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

from . import kimi
from .config import Settings, upstream_url
from .dialects import ANTHROPIC, OPENAI, client_key, error_event, error_response
from .errors import redact, upstream_error_message
from .http_types import EVENT_STREAM, Request, Response, StreamAborted, json_response
from .ids import new_turn_key
from .reasoning import Reasoning
from .sse import SSEParser
from .tap import AnthropicTap, OpenAITap
from .upstream import Upstream, UpstreamError, UpstreamResponse

log = logging.getLogger("rawproxy")

# Headers a Kimi upstream needs from the client (kimi.md section 2: the coding endpoint
# checks the User-Agent); everything else, credentials included, stays here.
_FORWARDED = {b"user-agent", b"anthropic-version", b"anthropic-beta", b"x-session-id", b"session_id", b"x-request-id"}
_FORWARDED_PREFIXES = (b"x-claude-code-",)
_ANSWER_HEADERS = {b"request-id", b"x-request-id", b"retry-after", b"x-ratelimit-remaining-requests"}


@dataclass(slots=True)
class Outcome:
    """What the access log and metrics learn about one request."""
    upstream_status: int | None = None
    repairs: list[str] = field(default_factory=list)
    model: str = ""
    # A streamed answer is logged when it ends, not when its head leaves: the relay sets
    # `stream` to complete | error | cancelled and calls `on_end` (set by the app) once.
    stream: str | None = None
    on_end: Callable[["Outcome"], None] | None = None
    streaming: bool = False  # the response is a relay that will call end_stream

    def end_stream(self, result: str) -> None:
        if self.stream is not None:
            return
        self.stream = result
        if self.on_end is not None:
            self.on_end(self)


def upstream_headers(request: Request, upstream_format: str, api_key: str, stream: bool,
                     forward_client_key: bool = True) -> list[tuple[bytes, bytes]]:
    """`forward_client_key` is False when clients authenticate to the proxy itself: their
    key is then an access key and never leaves the proxy."""
    headers = [
        (b"content-type", b"application/json"),
        (b"accept", b"text/event-stream" if stream else b"application/json"),
        (b"accept-encoding", b"identity"),  # the tap reads the bytes: no compression
    ]
    key = api_key.encode() if api_key else (client_key(request) if forward_client_key else None)
    if key:
        if upstream_format == ANTHROPIC:
            headers.append((b"x-api-key", key))
        else:
            headers.append((b"authorization", b"Bearer " + key))
    has_version = False
    for name, value in request.headers:
        if name in _FORWARDED or name.startswith(_FORWARDED_PREFIXES):
            headers.append((name, value))
            has_version = has_version or name == b"anthropic-version"
    if upstream_format == ANTHROPIC and not has_version:
        headers.append((b"anthropic-version", b"2023-06-01"))
    return headers


def _answer_headers(up: UpstreamResponse) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in up.headers if k in _ANSWER_HEADERS]


class Completion:
    """The completion route for one client dialect against the configured upstream."""

    def __init__(self, settings: Settings, upstream: Upstream, store, client: str, metrics=None) -> None:
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
            await self._repair(body, outcome)
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
        prefix = "toolu" if self.client == ANTHROPIC else "call"
        tap = AnthropicTap(turn_key, prefix) if self.upstream_format == ANTHROPIC else OpenAITap(turn_key, prefix)
        ctype = (up.header(b"content-type") or b"").lower()
        if stream and ctype.startswith(b"text/event-stream"):
            translator = self._stream_translator(client_model, turn_key, include_usage)
            relay = _Relay(up, tap, translator, self.client, self.store, outcome, self.metrics)
            outcome.streaming = True
            return Response(200, [EVENT_STREAM, (b"cache-control", b"no-cache")] + _answer_headers(up), stream=relay)
        raw = await up.read()
        if stream:
            raise UpstreamError(502, f"upstream answered a streaming request with {ctype.decode('latin-1') or 'no content type'}, not an event stream")
        try:
            answer = json.loads(raw)
        except ValueError:
            raise UpstreamError(502, "upstream answered with a body that is not JSON") from None
        tap.message(answer)
        remembered = tap.remembered()
        if remembered is not None:
            await self.store.put(turn_key, remembered)
        if self.client != self.upstream_format:
            answer = self._translate_response(answer, turn_key)
        answer["model"] = client_model
        return json_response(200, json.dumps(answer, ensure_ascii=False).encode(), _answer_headers(up))

    async def _repair(self, body: dict, outcome: Outcome) -> None:
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
        return error_response(self.client, up.status, message, _answer_headers(up))

    def _translate_request(self, body: dict) -> dict:
        from . import translate

        if self.client == ANTHROPIC:
            return translate.anthropic_to_openai_request(body)
        return translate.openai_to_anthropic_request(body)

    def _translate_response(self, answer: dict, turn_key: str) -> dict:
        from . import translate

        if self.client == ANTHROPIC:
            return translate.openai_to_anthropic_response(answer, turn_key)
        return translate.anthropic_to_openai_response(answer)

    def _stream_translator(self, model: str, turn_key: str, include_usage: bool):
        if self.client == self.upstream_format:
            return None
        from . import translate

        if self.client == ANTHROPIC:
            return translate.OpenAIToAnthropicStream(model, turn_key)
        return translate.AnthropicToOpenAIStream(model, include_usage)


class _Relay:
    """Moves one upstream SSE stream to the client, event by event, never buffering it whole.

    It is the Response's stream: `async for` runs `run()`, and `aclose()` releases the
    upstream answer even when the server never started iterating (the client left before
    the head went out), so no upstream connection outlives its client.
    """

    __slots__ = ("up", "tap", "translator", "client", "store", "outcome", "metrics", "_stored_calls",
                 "_gen", "_closed")

    def __init__(self, up: UpstreamResponse, tap, translator, client: str, store, outcome: Outcome,
                 metrics=None) -> None:
        self.up = up
        self.tap = tap
        self.translator = translator
        self.client = client
        self.store = store
        self.outcome = outcome
        self.metrics = metrics
        self._stored_calls = 0
        self._gen = None
        self._closed = False
        if metrics is not None:
            metrics.open_streams.inc()

    def __aiter__(self) -> AsyncIterator[bytes]:
        self._gen = self.run()
        return self._gen

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._gen is not None:
                await self._gen.aclose()
        finally:
            await self.up.aclose()
            if self.metrics is not None:
                self.metrics.open_streams.dec()
            self.outcome.end_stream("cancelled")  # no-op when run() already said how it ended

    async def _remember(self) -> None:
        """Store as soon as a tool call is seen: the client may send the next turn before EOF."""
        tap = self.tap
        if tap.tool_calls != self._stored_calls:
            remembered: Reasoning | None = tap.remembered()
            if remembered is not None:
                await self.store.put(tap.turn_key, remembered)
            self._stored_calls = tap.tool_calls

    async def run(self) -> AsyncIterator[bytes]:
        parser = SSEParser()
        translator = self.translator
        tap = self.tap
        complete = failed = False
        last = b""  # the last bytes sent: a translated stream's ending is read from them
        try:
            async for chunk in self.up.iter_bytes():
                out: list[bytes] = []
                for ev in parser.feed(chunk):
                    ev = tap.event(ev)
                    if translator is not None:
                        out.extend(translator.feed(ev))
                    else:
                        out.append(ev.raw)
                        if ev.dispatch and (ev.event == "message_stop" or ev.data == "[DONE]"):
                            complete = True
                        elif ev.event == "error" or (self.client == OPENAI and ev.data.startswith('{"error"')):
                            failed = True  # the upstream's own error event already tells the client
                await self._remember()
                if out:
                    last = b"".join(out)
                    yield last
                if failed:
                    break
            parser.close()
            if translator is not None:
                tail = translator.close()
                if tail:
                    last = b"".join(tail)
                    yield last
                complete, failed = _translated_ending(self.client, last)
            elif not complete and not failed:
                yield error_event(self.client, 502, "upstream stream ended before the answer was complete")
                failed = True
        except UpstreamError as exc:
            await self._remember()
            if complete or _translated_ending(self.client, last)[0]:
                # The answer was already whole: a connection dropped after it changes nothing.
                self.outcome.end_stream("complete")
                return
            self.outcome.end_stream("error")
            yield error_event(self.client, exc.status, exc.message)
            raise StreamAborted(exc.message) from None
        finally:
            await self.up.aclose()
        if failed or not complete:
            self.outcome.end_stream("error")
            raise StreamAborted("the stream ended with an error event")
        self.outcome.end_stream("complete")


def _translated_ending(client: str, last: bytes) -> tuple[bool, bool]:
    """(complete, failed) from the last bytes a stream sent. A translator's last output is
    its verdict: message_stop / [DONE] when whole, an error event when not (it writes
    nothing after either). Looked at once per stream, so the loop above stays as it was."""
    if client == ANTHROPIC:
        if b"event: message_stop" in last:
            return True, False
        return False, b"event: error" in last
    if last.rstrip().endswith(b"[DONE]"):
        return True, False
    return False, b'{"error"' in last
