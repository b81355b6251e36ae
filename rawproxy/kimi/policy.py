"""What each Kimi model family accepts (docs/kimi.md section 2)."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import ClientError
from ..core.ids import turn_key_of
from ..core.reasoning import Reasoning

# The smallest reasoning reported accepted; "" counts as missing on k2.6 (docs/kimi.md section 1).
PLACEHOLDER = " "

# Sampling parameters Kimi thinking models fix or reject (docs/kimi.md section 2, temperature row).
SAMPLING_PARAMS = ("temperature", "top_p", "top_k", "n", "presence_penalty", "frequency_penalty")
MAX_TOOLS = 128


def repair_common(body: dict, repairs: list[str]) -> None:
    """The rules both dialects share: fixed sampling, and Kimi's tool count limit."""
    dropped = [p for p in SAMPLING_PARAMS if p in body]
    for p in dropped:
        del body[p]
    if dropped:
        repairs.append("sampling_dropped")
    tools = body.get("tools")
    if isinstance(tools, list) and len(tools) > MAX_TOOLS:
        # A clear error from the proxy beats the upstream's (docs/kimi.md section 2, tool count).
        raise ClientError(f"Kimi accepts at most {MAX_TOOLS} tools; this request has {len(tools)}")


@dataclass(frozen=True, slots=True)
class ModelPolicy:
    family: str
    can_disable_thinking: bool   # k2.7-code, k2-thinking and the coding endpoint always think
    has_thinking_field: bool     # k3 has no `thinking` field (and takes reasoning_effort instead)


def policy_for(model: str) -> ModelPolicy:
    name = model.lower()
    if "k3" in name:
        return ModelPolicy("k3", False, False)
    if "k2.7" in name or "k2-7" in name or "k2p7" in name:
        return ModelPolicy("k2.7-code", False, True)
    if "k2-thinking" in name or "kimi-for-coding" in name or "k2p5" in name:
        return ModelPolicy("always-thinking", False, True)
    return ModelPolicy("k2", True, True)


def recall_for(ids: list[str], recalled: dict[str, Reasoning]) -> tuple[str | None, Reasoning | None]:
    """The turn key of a tool-call turn and what the store remembered for it."""
    key = None
    for call_id in ids:
        key = turn_key_of(call_id)
        if key is not None:
            return key, recalled.get(key)
    return key, None


def restored_reasoning(stored: Reasoning | None, own_text: str) -> tuple[str, str]:
    """Real reasoning first, then the turn's own text, then the placeholder (design principle 4)."""
    if stored is not None and stored.text.strip():
        return stored.text, "reasoning_restored"
    if own_text.strip():
        return own_text, "reasoning_from_text"
    return PLACEHOLDER, "reasoning_placeholder"


K3_EFFORT = {"minimal": "low", "low": "low", "medium": "high", "high": "high", "xhigh": "max", "max": "max"}
