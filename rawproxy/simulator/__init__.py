"""A strict simulated Kimi upstream (docs/kimi.md sections 1-3) for tests and `make run`."""

from .app import SimulatorApp
from .faults import SimulatedReset
from .rules import SimError, check_anthropic, check_openai

__all__ = ["SimulatorApp", "SimulatedReset", "SimError", "check_anthropic", "check_openai"]
