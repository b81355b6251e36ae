"""Kimi model families and the parameters each one accepts (docs/kimi.md sections 1 and 2).

Relays rename models (`moonshotai/kimi-k2.5`, `Pro/moonshotai/Kimi-K2.5`), so a family is
found by a case-insensitive substring, never by an exact name (docs/kimi.md, "Models in scope").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    # k2-thinking(-turbo), k2.7-code and the coding endpoint always think: `disabled` is a
    # 400 (docs/kimi.md section 2, "models that cannot turn thinking off").
    can_disable_thinking: bool
    thinking_default: bool
    # k3 has no `thinking` field at all and takes `reasoning_effort` low|high|max instead.
    accepts_thinking_field: bool = True
    accepts_reasoning_effort: bool = False
    # Fixed sampling (docs/kimi.md section 2, "temperature"): None means any value goes.
    temperature_thinking: float | None = None
    temperature_plain: float | None = None
    fixed_sampling: bool = False  # top_p 0.95, n 1, presence/frequency penalty 0

    def thinking_on(self, requested: bool | None) -> bool:
        """Whether the answer thinks, given the client's valid wish (None: not said)."""
        if not self.accepts_thinking_field or not self.can_disable_thinking:
            return True
        return self.thinking_default if requested is None else requested

    def allowed_temperature(self, thinking: bool) -> float | None:
        return self.temperature_thinking if thinking else self.temperature_plain


# k2.5: "only 1.0 with thinking, only 0.6 without"; k2.6 / k2.7: only 1 (docs/kimi.md section 2).
K2_5 = Family("k2.5", True, True, temperature_thinking=1.0, temperature_plain=0.6, fixed_sampling=True)
K2_6 = Family("k2.6", True, True, temperature_thinking=1.0, temperature_plain=1.0, fixed_sampling=True)
K2_7_CODE = Family("k2.7-code", False, True, temperature_thinking=1.0, fixed_sampling=True)
K2_THINKING = Family("k2-thinking", False, True)
# The coding endpoint serves k2.5 (`k2p5`) with thinking always on.
FOR_CODING = Family("kimi-for-coding", False, True, temperature_thinking=1.0, fixed_sampling=True)
K3 = Family(
    "k3", False, True, accepts_thinking_field=False, accepts_reasoning_effort=True,
    temperature_thinking=1.0, fixed_sampling=True,
)
# Older Kimi / moonshot-v1 models: no thinking unless asked, free sampling.
GENERIC = Family("kimi", True, False)

# Order matters: the first substring found wins.
_PATTERNS: tuple[tuple[str, Family], ...] = (
    ("k3", K3),
    ("k2.7", K2_7_CODE),
    ("k2-7", K2_7_CODE),
    ("k2.6", K2_6),
    ("k2-6", K2_6),
    ("kimi-for-coding", FOR_CODING),
    ("k2p5", FOR_CODING),
    ("k2.5", K2_5),
    ("k2-5", K2_5),
    ("k2-thinking", K2_THINKING),
)

KNOWN_MODELS = (
    "kimi-k2.5", "kimi-k2.6", "kimi-k2.7-code", "kimi-k2-thinking", "kimi-k2-thinking-turbo",
    "kimi-for-coding", "kimi-k3",
)


def family_of(model: str) -> Family | None:
    """The family of a model name, or None for a model Kimi does not serve (a 404)."""
    name = model.lower()
    if not any(mark in name for mark in ("kimi", "k2p5", "moonshot")):
        return None
    for pattern, family in _PATTERNS:
        if pattern in name:
            return family
    return GENERIC
