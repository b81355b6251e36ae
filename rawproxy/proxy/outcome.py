"""What one request's handling learns, for the access log and the metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from ..core.usage import TokenUsage

StreamResult = Literal["complete", "error", "cancelled"]


@dataclass(slots=True)
class Outcome:
    upstream_status: int | None = None
    repairs: list[str] = field(default_factory=list)
    model: str = ""
    # The tap's usage, filled while the answer passes (a stream's by its end); None for
    # requests that never reached an upstream answer.
    usage: TokenUsage | None = None
    sent_upstream_at: float | None = None  # perf_counter() when the upstream request left
    client: str = ""  # a short label for the dashboard: never the key
    # A streamed answer is logged when it ends, not when its head leaves: the relay sets
    # `stream` to how it ended and calls `on_end` (set by the app) once.
    stream: StreamResult | None = None
    on_end: Callable[["Outcome"], None] | None = None
    streaming: bool = False  # the response is a relay that will call end_stream

    def end_stream(self, result: StreamResult) -> None:
        if self.stream is not None:
            return
        self.stream = result
        if self.on_end is not None:
            self.on_end(self)
