"""The relay: moves one upstream SSE stream to the client, event by event.

Upstream bytes -> SSE framer -> tap -> stream translator (or the pass-through) -> the
client's bytes. Events that arrived in one read leave in one write; nothing is buffered
whole. How the stream ended is what the translator says (`ending`), never read back
from the bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from ..core.dialects import Dialect, error_event
from ..core.errors import UpstreamError
from ..core.metrics import Metrics
from ..core.reasoning import ReasoningStore
from ..core.sse import SSEParser
from ..core.tap import Tap
from ..server.http import StreamAborted
from ..translate import StreamTranslator
from ..upstream.client import UpstreamResponse
from .outcome import Outcome


class Relay:
    """The Response's stream: `async for` runs `run()`, and `aclose()` releases the
    upstream answer even when the server never started iterating (the client left before
    the head went out), so no upstream connection outlives its client."""

    __slots__ = ("up", "tap", "translator", "client", "store", "outcome", "metrics", "_stored_calls",
                 "_gen", "_closed")

    def __init__(self, up: UpstreamResponse, tap: Tap, translator: StreamTranslator, client: Dialect,
                 store: ReasoningStore, outcome: Outcome, metrics: Metrics | None = None) -> None:
        self.up = up
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

    async def run(self) -> AsyncIterator[bytes]:
        parser = SSEParser()
        translator = self.translator
        tap = self.tap
        try:
            async for chunk in self.up.iter_bytes():
                out: list[bytes] = []
                for ev in parser.feed(chunk):
                    out.extend(translator.feed(tap.event(ev)))
                await self._remember()
                if out:
                    yield b"".join(out)
                if translator.ending == "failed":
                    break  # the client has its error event; the rest is not read
            parser.close()
            tail = translator.close()
            if tail:
                yield b"".join(tail)
        except UpstreamError as exc:
            await self._remember()
            if translator.ending == "complete":
                # The answer was already whole: a connection dropped after it changes nothing.
                self.outcome.end_stream("complete")
                return
            self.outcome.end_stream("error")
            if translator.ending is None:
                yield error_event(self.client, exc.status, exc.message)
            raise StreamAborted(exc.message) from None
        finally:
            await self.up.aclose()
        if translator.ending != "complete":
            self.outcome.end_stream("error")
            raise StreamAborted("the stream ended with an error event")
        self.outcome.end_stream("complete")
