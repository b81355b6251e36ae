"""Token usage as an upstream reports it, in one shape for both upstream dialects.

`input` counts every input token the model read, the cached ones included (OpenAI's
`prompt_tokens`; Anthropic's `input_tokens` plus both cache fields); `cached_input` is the
part of it served from the cache; `output` the tokens generated; `reasoning` the part of
`output` spent thinking, only where the upstream says (OpenAI's
`completion_tokens_details.reasoning_tokens`). A figure the upstream did not report stays
None: nothing is estimated.

Reading never raises: usage is bookkeeping, and an upstream that shapes it oddly must not
cost the client its answer.
"""

from __future__ import annotations

from typing import Any

from . import jsonfast

TOKEN_KINDS = ("input", "output", "cached_input", "reasoning")


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


class TokenUsage:
    __slots__ = ("input", "output", "cached_input", "reasoning", "_anthropic")

    def __init__(self) -> None:
        self.input: int | None = None
        self.output: int | None = None
        self.cached_input: int | None = None
        self.reasoning: int | None = None
        # Anthropic streams split usage over message_start and message_delta: the fields
        # seen so far, later values replacing earlier ones.
        self._anthropic: dict[str, int] = {}

    def reported(self) -> dict[str, int]:
        """The figures the upstream gave, by kind (TOKEN_KINDS order)."""
        out: dict[str, int] = {}
        for kind in TOKEN_KINDS:
            value = getattr(self, kind)
            if value is not None:
                out[kind] = value
        return out

    def read_openai(self, usage: Any) -> None:
        """An OpenAI `usage` object (a whole answer's, or a stream's last chunk)."""
        if not isinstance(usage, dict):
            return
        prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
        if prompt is None and completion is None:
            return
        self.input, self.output = prompt, completion
        details = usage.get("prompt_tokens_details")
        cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else None
        # Kimi reports the cached part at the top level as well (or only there).
        self.cached_input = cached if cached is not None else _count(usage.get("cached_tokens"))
        out_details = usage.get("completion_tokens_details")
        self.reasoning = _count(out_details.get("reasoning_tokens")) if isinstance(out_details, dict) else None

    def read_anthropic(self, usage: Any) -> None:
        """An Anthropic `usage` object; a stream's later ones complete the earlier."""
        if not isinstance(usage, dict):
            return
        seen = self._anthropic
        for name in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
            value = _count(usage.get(name))
            if value is not None:
                seen[name] = value
        if "input_tokens" in seen or "cache_read_input_tokens" in seen:
            self.input = (seen.get("input_tokens", 0) + seen.get("cache_read_input_tokens", 0)
                          + seen.get("cache_creation_input_tokens", 0))
            self.cached_input = seen.get("cache_read_input_tokens")
        self.output = seen.get("output_tokens", self.output)


def json_object(data: str) -> dict | None:
    """An event's data as a JSON object, or None when it is not one (never raises)."""
    try:
        doc = jsonfast.loads(data)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None
