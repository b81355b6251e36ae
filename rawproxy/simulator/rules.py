"""What a strict Kimi upstream rejects, as pure functions: one check per dialect.

Every rule here comes from docs/kimi.md (sections 1 and 2) and is kept
strict on purpose: a request that real Kimi would refuse must be refused here too, so
that the proxy's repairs are tested against the upstream's rules, not against our hopes.
The first problem found wins, in message order, like a real validator's single pass.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .models import Family, family_of

MAX_TOOLS = 128  # docs/kimi.md section 2, "tool count"
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
INVALID = "invalid_request_error"


@dataclass(frozen=True, slots=True)
class SimError:
    status: int
    message: str
    type: str = INVALID


def _bad(message: str) -> SimError:
    return SimError(400, message)


def missing_reasoning(index: int) -> SimError:
    # docs/kimi.md section 1: N is the 0-based index in `messages`, system included.
    return _bad(
        "thinking is enabled but reasoning_content is missing in assistant tool call "
        f"message at index {index}"
    )


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _fmt(value: float) -> str:
    return f"{value:g}"


def _present(text: Any) -> bool:
    # docs/kimi.md section 1: "" counts as missing (k2.6); a single space " " is accepted.
    return isinstance(text, str) and text != ""


def _invalid_part(index: int, role: str, part_type: Any) -> SimError:
    # Kimi's own wording (MoonshotAI/kimi-cli issue 788).
    return _bad(f"the message at position {index} with role '{role}' contains an invalid part type: {part_type}")


def parse_json(raw: bytes) -> tuple[Any, SimError | None]:
    try:
        return json.loads(raw), None
    except (ValueError, UnicodeDecodeError) as exc:
        return None, _bad(f"invalid JSON body: {exc}")


# ---------------------------------------------------------------- shared checks


def check_common(body: Any, not_found_type: str) -> tuple[Family | None, SimError | None]:
    if not isinstance(body, dict):
        return None, _bad("request body must be a JSON object")
    # JSON object, model and messages: the checks every endpoint (count_tokens too) runs.
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return None, _bad("model is required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None, _bad("messages is required and must be a non-empty array")
    family = family_of(model)
    if family is None:
        return None, SimError(404, f"Not found the model {model} or Permission denied", not_found_type)
    return family, None


def _reasoning_effort(body: dict, family: Family) -> SimError | None:
    effort = body.get("reasoning_effort")
    if effort is None:
        return None
    if not family.accepts_reasoning_effort:  # k2.x: docs/kimi.md section 2
        return _bad("cannot specify both 'thinking' and 'reasoning_effort'")
    if effort not in ("low", "high", "max"):  # k3 takes low|high|max
        return _bad("invalid reasoning_effort: only low, high, max are allowed for this model")
    return None


def _sampling(body: dict, family: Family, thinking: bool) -> SimError | None:
    """docs/kimi.md section 2, "temperature": fixed values, any other one is a 400."""
    if "temperature" in body and body["temperature"] is not None:
        allowed = family.allowed_temperature(thinking)
        value = _num(body["temperature"])
        if value is None or (allowed is not None and value != allowed):
            shown = _fmt(allowed) if allowed is not None else "a number"
            return _bad(f"invalid temperature: only {shown} is allowed for this model")
    if not family.fixed_sampling:
        return None
    for name, allowed in (("top_p", 0.95), ("n", 1), ("presence_penalty", 0), ("frequency_penalty", 0)):
        if body.get(name) is not None and _num(body[name]) != allowed:
            return _bad(f"invalid {name}: only {_fmt(allowed)} is allowed for this model")
    return None


def _tool_count(tools: Any) -> SimError | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        return _bad("tools must be an array")
    if len(tools) > MAX_TOOLS:
        return _bad(f"too many tools: at most {MAX_TOOLS} tools are allowed, got {len(tools)}")
    return None


def _tool_names(names: list[Any]) -> SimError | None:
    seen: set[str] = set()
    for name in names:
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            return _bad(f"invalid tool name: {name!r} must match ^[a-zA-Z0-9_-]{{1,64}}$")
        if name in seen:
            return _bad(f"duplicate tool name: {name}")
        seen.add(name)
    return None


INCOMPATIBLE_TOOL_CHOICE = "tool_choice specified is incompatible with thinking enabled"
ONLY_ENABLED = "invalid thinking: only type=enabled is allowed for this model"
NO_THINKING_FIELD = "invalid thinking: this model does not accept the thinking parameter, use reasoning_effort"


# ---------------------------------------------------------------- OpenAI dialect


def thinking_requested(body: dict) -> bool | None:
    """What the client asked of `thinking` (None: nothing); the same field in both dialects."""
    thinking = body.get("thinking")
    return None if not isinstance(thinking, dict) else thinking.get("type") == "enabled"


def check_openai(body: Any) -> SimError | None:
    family, err = check_common(body, "resource_not_found_error")
    if err:
        return err
    assert family is not None
    thinking = body.get("thinking")
    if thinking is not None:
        if not family.accepts_thinking_field:  # k3 has no `thinking` field
            return _bad(NO_THINKING_FIELD)
        if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled"):
            return _bad("invalid thinking: type must be one of enabled, disabled")
        if thinking["type"] == "disabled" and not family.can_disable_thinking:
            return _bad(ONLY_ENABLED)
    on = family.thinking_on(thinking_requested(body))
    err = _reasoning_effort(body, family) or _sampling(body, family, on) or _openai_tools(body, on)
    if err:
        return err
    for index, message in enumerate(body["messages"]):
        err = _openai_message(index, message, on)
        if err:
            return err
    return None


def _openai_tools(body: dict, thinking: bool) -> SimError | None:
    tools = body.get("tools")
    err = _tool_count(tools)
    if err:
        return err
    names = []
    for tool in tools or []:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            return _bad("invalid tools: each tool must be {\"type\": \"function\", \"function\": {...}}")
        names.append(fn.get("name"))
    err = _tool_names(names)
    if err:
        return err
    choice = body.get("tool_choice")
    if choice is None or choice in ("auto", "none"):
        return None
    named = isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict)
    if choice != "required" and not named:
        return _bad("invalid tool_choice: must be none, auto, required or a function")
    if thinking:  # docs/kimi.md section 2, "tool_choice"
        return _bad(INCOMPATIBLE_TOOL_CHOICE)
    return None


_OPENAI_PARTS = {"user": {"text", "image_url", "video_url"}, "system": {"text"}, "assistant": {"text"}, "tool": {"text"}}


def _openai_message(index: int, message: Any, thinking: bool) -> SimError | None:
    if not isinstance(message, dict):
        return _bad(f"message at index {index} must be an object")
    role = message.get("role")
    if role not in _OPENAI_PARTS:
        # Kimi has no `developer` role (earendil-works/pi PR 8109, openclaw issue 8579).
        return _bad(f"role '{role}' is not allowed")
    content = message.get("content")
    if isinstance(content, list):
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in _OPENAI_PARTS[role]:
                return _invalid_part(index, role, kind)
            if kind == "text" and not _present(part.get("text")):
                # `[{"type": "text", "text": ""}]` is refused too (MoonshotAI/kimi-cli PR 2035).
                return _bad("text content is empty")
    elif content is not None and not isinstance(content, str):
        return _bad(f"invalid content in message at index {index}")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        return _bad(f"tool message at index {index} must have a tool_call_id")
    if role != "assistant":
        return None
    calls = message.get("tool_calls")
    if calls is not None and not isinstance(calls, list):
        return _bad(f"invalid tool_calls in message at index {index}")
    for call in calls or []:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(fn.get("arguments", ""), str):
            return _bad(f"invalid tool_calls in message at index {index}")
    empty = content is None or content == "" or content == []
    if not calls:
        # docs/kimi.md section 2, "empty assistant content".
        return _bad("assistant message must not be empty") if empty else None
    if content == "" or content == []:
        return _bad("text content is empty")
    if thinking and not _present(message.get("reasoning_content")):
        return missing_reasoning(index)
    return None


# ---------------------------------------------------------------- Anthropic dialect


def check_anthropic(body: Any) -> SimError | None:
    family, err = check_common(body, "not_found_error")
    if err:
        return err
    assert family is not None
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        return _bad("max_tokens: Field required (a positive integer)")
    err = _anthropic_thinking(body.get("thinking"), family)
    if err:
        return err
    on = family.thinking_on(thinking_requested(body))
    err = _reasoning_effort(body, family) or _sampling(body, family, on) or _anthropic_tools(body, on)
    if err:
        return err
    err = _anthropic_system(body.get("system"))
    if err:
        return err
    for index, message in enumerate(body["messages"]):
        err = _anthropic_message(index, message, on)
        if err:
            return err
    return None


def _anthropic_thinking(thinking: Any, family: Family) -> SimError | None:
    if thinking is None:
        return None
    if not family.accepts_thinking_field:
        return _bad(NO_THINKING_FIELD)
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "adaptive":
        # Claude Code sends it; strict Kimi upstreams refuse it (docs/kimi.md section 2).
        return _bad("invalid thinking: type 'adaptive' is not supported, use enabled or disabled")
    if kind == "disabled":
        return None if family.can_disable_thinking else _bad(ONLY_ENABLED)
    if kind != "enabled":
        return _bad("invalid thinking: type must be one of enabled, disabled")
    budget = thinking.get("budget_tokens")
    # The Anthropic dialect needs a budget with `enabled` (docs/kimi.md: "with a budget where the
    # dialect needs one"); the bound is the Anthropic API's own minimum.
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1024:
        return _bad("thinking.budget_tokens: must be an integer >= 1024 when thinking is enabled")
    return None


def _anthropic_tools(body: dict, thinking: bool) -> SimError | None:
    tools = body.get("tools")
    err = _tool_count(tools)
    if err:
        return err
    names = []
    for tool in tools or []:
        if not isinstance(tool, dict):
            return _bad("invalid tools: each tool must be an object")
        if tool.get("type") not in (None, "custom"):  # no server tools behind Kimi
            return _bad(f"unsupported tool type: {tool.get('type')}")
        if not isinstance(tool.get("input_schema"), dict):
            return _bad(f"tools: input_schema is required for tool {tool.get('name')!r}")
        names.append(tool.get("name"))
    err = _tool_names(names)
    if err:
        return err
    choice = body.get("tool_choice")
    if choice is None:
        return None
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in ("auto", "any", "tool", "none") or (kind == "tool" and not isinstance(choice.get("name"), str)):
        return _bad("invalid tool_choice: type must be auto, any, tool (with name) or none")
    if thinking and kind in ("any", "tool"):  # docs/kimi.md section 2, "tool_choice"
        return _bad(INCOMPATIBLE_TOOL_CHOICE)
    return None


EMPTY_TEXT_BLOCK = "text content blocks must be non-empty"


def _anthropic_system(system: Any) -> SimError | None:
    if system is None or isinstance(system, str):
        return None
    if not isinstance(system, list):
        return _bad("system must be a string or an array of text blocks")
    for block in system:
        if not isinstance(block, dict) or block.get("type") != "text":
            return _bad("system blocks must be text blocks")
        if not _present(block.get("text")):
            return _bad(EMPTY_TEXT_BLOCK)
    return None


_ANTHROPIC_BLOCKS = {
    "user": {"text", "image", "document", "tool_result"},
    # Kimi only knows its own reasoning: `redacted_thinking` (Claude's encrypted reasoning)
    # means nothing to it, and `tool_reference` is refused (docs/protocols.md section 1).
    "assistant": {"text", "thinking", "tool_use"},
}
_TOOL_RESULT_BLOCKS = {"text", "image", "document"}


def _anthropic_message(index: int, message: Any, thinking: bool) -> SimError | None:
    if not isinstance(message, dict):
        return _bad(f"messages: the message at index {index} must be an object")
    role = message.get("role")
    if role not in _ANTHROPIC_BLOCKS:
        # Claude Code puts `role: "system"` inside messages; Kimi's Anthropic endpoint
        # does not accept it (it takes only the top-level `system`).
        return _bad(f"role '{role}' is not allowed in messages (at index {index}); use the top-level system parameter")
    content = message.get("content")
    if isinstance(content, str):
        if content == "":
            return _bad("assistant message must not be empty" if role == "assistant" else EMPTY_TEXT_BLOCK)
        return None
    if not isinstance(content, list):
        return _bad(f"messages: the message at index {index} has no content")
    if not content:
        return _bad(f"{role} message must not be empty")
    seen_thinking = False
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in _ANTHROPIC_BLOCKS[role]:
            return _invalid_part(index, role, kind)
        err = _anthropic_block(index, role, block)
        if err:
            return err
        if kind == "thinking" and _present(block.get("thinking")):
            seen_thinking = True
        if kind == "tool_use" and thinking and not seen_thinking:
            # docs/kimi.md section 1: a tool_use turn needs a thinking block before it.
            return missing_reasoning(index)
    return None


def _anthropic_block(index: int, role: str, block: dict) -> SimError | None:
    kind = block["type"]
    if kind == "text":
        return None if _present(block.get("text")) else _bad(EMPTY_TEXT_BLOCK)
    if kind == "tool_use":
        if not (isinstance(block.get("id"), str) and isinstance(block.get("name"), str) and isinstance(block.get("input"), dict)):
            return _bad(f"invalid tool_use block in message at index {index}")
    elif kind == "thinking":
        if not isinstance(block.get("thinking"), str):
            return _bad(f"invalid thinking block in message at index {index}")
    elif kind == "tool_result":
        if not isinstance(block.get("tool_use_id"), str):
            return _bad(f"tool_result block in message at index {index} needs a tool_use_id")
        if "content" not in block:
            # Kimi Coding refuses an omitted tool_result content; "" and [] pass (EYHN/kwwk PR 142).
            return _bad(f"tool_result block in message at index {index} needs content")
        inner = block.get("content")
        if isinstance(inner, list):
            for part in inner:
                part_kind = part.get("type") if isinstance(part, dict) else None
                if part_kind not in _TOOL_RESULT_BLOCKS:
                    return _invalid_part(index, role, part_kind)
                if part_kind == "text" and not _present(part.get("text")):
                    return _bad(EMPTY_TEXT_BLOCK)
        elif inner is not None and not isinstance(inner, str):
            return _bad(f"invalid tool_result content in message at index {index}")
    return None
