"""Fault injection, chosen per request by the `x-sim-fault` header.

Syntax: `key=value` pairs joined by `;`, for example
  status=429;retry-after=1;times=1   answer that status (with Retry-After) instead
  reset-after=N                      stream N events, then abort the connection
  stall-after=N;seconds=S            stream N events, sleep S seconds, then go on
  slow-first-byte=S                  wait S seconds before the response head
  times=K                            any fault: only the first K requests carrying this
                                     exact header value get it, later ones are served normally
For a non-streamed answer, reset and stall act half-way through the body.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass

import trio

HEADER = b"x-sim-fault"


class SimulatedReset(Exception):
    """Raised inside a response stream: the server drops the connection mid-body."""


@dataclass(frozen=True, slots=True)
class Fault:
    status: int | None = None
    retry_after: str | None = None
    times: int | None = None
    reset_after: int | None = None
    stall_after: int | None = None
    seconds: float = 0.0
    slow_first_byte: float = 0.0


_KEYS = {
    "status": ("status", int),
    "retry-after": ("retry_after", str),
    "times": ("times", int),
    "reset-after": ("reset_after", int),
    "stall-after": ("stall_after", int),
    "seconds": ("seconds", float),
    "slow-first-byte": ("slow_first_byte", float),
}


def parse_fault(value: str) -> Fault:
    """Raises ValueError for a malformed header (the app answers 400: a test bug)."""
    fields: dict = {}
    for item in value.split(";"):
        if not item.strip():
            continue
        key, sep, raw = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in _KEYS:
            raise ValueError(f"bad x-sim-fault item {item.strip()!r}")
        name, kind = _KEYS[key]
        fields[name] = kind(raw.strip())
    return Fault(**fields)


class FaultBook:
    """Counts requests per header value, so `times` lets later requests through."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def active(self, header_value: str, fault: Fault) -> bool:
        used = self._seen.get(header_value, 0)
        self._seen[header_value] = used + 1
        return fault.times is None or used < fault.times

    def forget(self, header_value: str) -> None:
        self._seen.pop(header_value, None)

    def reset(self) -> None:
        self._seen.clear()


async def paced(items: Iterable[bytes], fault: Fault | None, delay: float) -> AsyncGenerator[bytes, None]:
    """Yield one SSE event (or body part) per item, applying a stream fault."""
    for i, item in enumerate(items):
        if fault is not None:
            if fault.reset_after is not None and i >= fault.reset_after:
                raise SimulatedReset(f"simulated connection reset after {i} events")
            if fault.stall_after is not None and i == fault.stall_after:
                await trio.sleep(fault.seconds)
        yield item
        await trio.sleep(delay)  # a checkpoint even at 0: events leave one by one


def split_body(body: bytes, fault: Fault) -> list[bytes] | None:
    """A plain body cut in two, when a reset or stall fault must act inside it."""
    if fault.reset_after is None and fault.stall_after is None:
        return None
    half = max(1, len(body) // 2)
    return [body[:half], body[half:]]


def body_fault(fault: Fault) -> Fault:
    """The fault re-aimed at the two parts of a split body: act after the first part."""
    return Fault(
        reset_after=1 if fault.reset_after is not None else None,
        stall_after=1 if fault.stall_after is not None else None,
        seconds=fault.seconds,
    )
