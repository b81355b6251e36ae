"""When to send an upstream request again, and how long to wait first.

Pure policy; the loop that sleeps and re-sends lives in upstream.py. A retry is only
ever decided before the client has received a byte (the upstream answered with a status
that is not the answer, or could not be reached), so nothing is ever sent twice to a
client.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

# Statuses that mean "not now" rather than "no": rate limits, overload and relay hiccups.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 529})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int = 2           # attempts after the first
    base_delay: float = 0.25   # first backoff; doubles per attempt, with jitter
    max_wait: float = 10.0     # longest wait; a longer Retry-After goes back to the client

    def delay(
        self,
        attempt: int,
        status: int | None,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float | None:
        """Seconds to wait before re-sending, or None when this answer should stand.

        `attempt` counts retries already made; `status` is None for a connection that
        could not be made. A Retry-After the upstream sent is honoured exactly; one longer
        than `max_wait` is not waited out here: the client (whose SDK honours it too)
        gets the answer with its Retry-After, instead of a request hanging in the proxy.
        """
        if attempt >= self.retries:
            return None
        if status is not None and status not in RETRY_STATUSES:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_wait else None
        # Full backoff halved at random, so clients that failed together retry apart.
        backoff = min(self.max_wait, self.base_delay * (2 ** attempt))
        return backoff * (0.5 + rand() / 2)


def parse_retry_after(value: bytes | None, value_ms: bytes | None = None,
                      now: Callable[[], float] = time.time) -> float | None:
    """Seconds from `retry-after-ms` (OpenAI, Anthropic) or `retry-after` (seconds or an
    HTTP date); None when absent or unreadable."""
    if value_ms:
        try:
            ms = float(value_ms)
        except ValueError:
            ms = -1.0
        if ms >= 0:
            return ms / 1000.0
    if not value:
        return None
    text = value.decode("latin-1").strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(text).timestamp() - now()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)
