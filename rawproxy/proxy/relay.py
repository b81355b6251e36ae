"""The relay: moves one upstream SSE stream to the client, event by event.

Upstream bytes -> SSE framer -> tap -> stream translator (or the pass-through) -> the
client's bytes. Events that arrived in one read leave in one write; nothing is buffered
whole. How the stream ended is what the translator says (`ending`), never read back
from the bytes. An upstream event the proxy cannot read (not JSON, or fields of the wrong
type) or one past the size limit ends the stream with an error event in the client's
format, as a broken connection does; the upstream key is redacted from every byte sent.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from ..core.dialects import Dialect, error_event
from ..core.errors import UpstreamError, redact, redact_bytes
from ..core.metrics import Metrics
from ..core.reasoning import ReasoningStore
from ..core.sse import DEFAULT_MAX_EVENT_BYTES, EventTooLarge, SSEParser
from ..core.tap import Tap
from ..server.http import StreamAborted
from ..translate import StreamTranslator
from ..upstream.client import UpstreamResponse
from .outcome import Outcome

log = logging.getLogger("rawproxy")

# What reading an event of the wrong shape raises: bad JSON (or JSON nested too deep to
# parse), a string or list where the tap or a translator expects an object, an index that
# is not a number.
_MALFORMED = (ValueError, RecursionError, TypeError, AttributeError, KeyError, IndexError)


class Relay:
    """The Response's stream: `async for` runs `run()`, and `aclose()` releases the
    upstream answer even when the server never started iterating (the client left before
    the head went out), so no upstream connection outlives its client."""

    __slots__ = ("up", "tap", "translator", "client", "store", "outcome", "metrics", "secrets", "max_event_bytes",
                 "_stored_calls", "_gen", "_closed")

    def __init__(self, up: UpstreamResponse, tap: Tap, translator: StreamTranslator, client: Dialect,
                 store: ReasoningStore, outcome: Outcome, metrics: Metrics | None = None, *,
                 secrets: tuple[str, ...] = (), max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.up = up
        self.secrets = secrets  # redacted from everything the client is sent
        self.max_event_bytes = max_event_bytes
        self.tap = tap
        self.translator = translator
        self.client = client
        self.store = store
        self.outcome = outcome
        self.metrics = metrics
        self._stored_calls = 0
        self._gen: AsyncIterator[bytes] | None = None
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
                await self._gen.aclose()  # type: ignore[attr-defined]
        finally:
            await self.up.aclose()
            if self.metrics is not None:
                self.metrics.open_streams.dec()
            self.outcome.end_stream("cancelled")  # no-op when run() already said how it ended

    async def _remember(self) -> None:
        """Store as soon as a tool call is seen: the client may send the next turn before EOF."""
        tap = self.tap
        if tap.tool_calls != self._stored_calls:
            remembered = tap.remembered()
            if remembered is not None:
                await self.store.put(tap.turn_key, remembered)
            self._stored_calls = tap.tool_calls

    def _unreadable(self, kind: str, message: str, detail: str = "") -> UpstreamError:
        """An upstream stream the proxy cannot go on reading: counted, logged, and the
        error the client's error event will carry."""
        if self.metrics is not None:
            self.metrics.upstream_errors.inc(kind)
        log.warning("%s%s", message, redact(f" ({detail})", *self.secrets)[:300] if detail else "")
        return UpstreamError(message)

    def _redacted(self, data: bytes) -> bytes:
        return redact_bytes(data, self.secrets) if self.secrets else data

    async def run(self) -> AsyncIterator[bytes]:
        parser = SSEParser(self.max_event_bytes)
        translator = self.translator
        tap = self.tap
        where = self.up.where
        try:
            async for chunk in self.up.iter_bytes():
                out: list[bytes] = []
                failure: UpstreamError | None = None
                try:
                    events = parser.feed(chunk)
                except EventTooLarge as exc:
                    events = exc.events  # the whole events before it still go out
                    failure = self._unreadable(
                        "event_too_large", f"upstream {where} sent a stream event larger than {exc.limit} bytes "
                                           "(the proxy's --max-event-bytes)")
                try:
                    for ev in events:
                        out.extend(translator.feed(tap.event(ev)))
                except _MALFORMED as exc:
                    failure = self._unreadable("malformed", f"upstream {where} sent a malformed stream event",
                                               f"{type(exc).__name__}: {exc}")
                await self._remember()
                if out:
                    yield self._redacted(b"".join(out))
                if failure is not None:
                    raise failure
                if translator.ending == "failed":
                    break  # the client has its error event; the rest is not read
            parser.close()
            tail = translator.close()
            if tail:
                yield self._redacted(b"".join(tail))
        except UpstreamError as exc:
            await self._remember()
            if translator.ending == "complete":
                # The answer was already whole: a connection dropped after it changes nothing.
                self.outcome.end_stream("complete")
                return
            self.outcome.end_stream("error")
            if translator.ending is None:
                yield self._redacted(error_event(self.client, exc.status, exc.message))
            raise StreamAborted(exc.message) from None
        finally:
            await self.up.aclose()
        if translator.ending != "complete":
            self.outcome.end_stream("error")
            raise StreamAborted("the stream ended with an error event")
        self.outcome.end_stream("complete")
