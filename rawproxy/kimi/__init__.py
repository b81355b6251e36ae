"""The Kimi repair: make any client's request pass a Kimi thinking upstream (docs/kimi.md).

Pure functions over parsed bodies, one module per upstream dialect. Each mutates the body
it is given and returns the kinds of repair it made, for logs and metrics.
"""

from .anthropic import repair_anthropic, turn_keys_anthropic
from .openai import repair_openai, turn_keys_openai
from .policy import ModelPolicy, policy_for

__all__ = [
    "ModelPolicy", "policy_for", "repair_anthropic", "repair_openai",
    "turn_keys_anthropic", "turn_keys_openai",
]
