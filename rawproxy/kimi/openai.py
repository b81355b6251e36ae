"""The Kimi repair for an OpenAI-format upstream (`/chat/completions`)."""

from __future__ import annotations

from ..core.ids import turn_key_of
from ..core.messages import text_of
from ..core.reasoning import Reasoning
from .policy import K3_EFFORT, policy_for, recall_for, repair_common, restored_reasoning


def turn_keys_openai(body: dict) -> set[str]:
    keys = set()
    for msg in body.get("messages") or ():
        if isinstance(msg, dict) and msg.get("role") == "assistant":
            for call in msg.get("tool_calls") or ():
                key = turn_key_of(call.get("id")) if isinstance(call, dict) else None
                if key:
                    keys.add(key)
    return keys


def _thinking_on(body: dict, repairs: list[str]) -> bool:
    policy = policy_for(str(body.get("model", "")))
    thinking = body.get("thinking")
    effort = body.get("reasoning_effort")
    wants_off = (isinstance(thinking, dict) and thinking.get("type") == "disabled") or effort == "none"
    if not policy.has_thinking_field:
        if "thinking" in body:
            del body["thinking"]
            repairs.append("thinking_dropped")
        if effort is not None:
            mapped = K3_EFFORT.get(effort) if isinstance(effort, str) else None
            if mapped is None:
                del body["reasoning_effort"]
                repairs.append("reasoning_effort_dropped")
            elif mapped != effort:
                body["reasoning_effort"] = mapped
                repairs.append("reasoning_effort_mapped")
        return True
    if effort is not None:
        # k2.x: "cannot specify both 'thinking' and 'reasoning_effort'" (docs/kimi.md section 2).
        del body["reasoning_effort"]
        repairs.append("reasoning_effort_dropped")
    if wants_off and policy.can_disable_thinking:
        body["thinking"] = {"type": "disabled"}
        return False
    if wants_off or (isinstance(thinking, dict) and thinking.get("type") not in (None, "enabled")):
        body["thinking"] = {"type": "enabled"}
        repairs.append("thinking_enabled")
    return True


def repair_openai(body: dict, recalled: dict[str, Reasoning]) -> list[str]:
    repairs: list[str] = []
    thinking = _thinking_on(body, repairs)
    repair_common(body, repairs)
    choice = body.get("tool_choice")
    if thinking and (choice == "required" or isinstance(choice, dict)):
        # "tool_choice specified is incompatible with thinking enabled" (docs/kimi.md section 2).
        body["tool_choice"] = "auto"
        repairs.append("tool_choice_auto")

    messages = body.get("messages") or []
    kept = []
    for msg in messages:
        if not isinstance(msg, dict):
            kept.append(msg)
            continue
        role = msg.get("role")
        if role == "developer":
            msg["role"] = "system"
            repairs.append("developer_to_system")
        elif role == "assistant":
            if not _repair_assistant(msg, recalled, repairs):
                repairs.append("empty_assistant_dropped")
                continue
        kept.append(msg)
    if len(kept) != len(messages):
        body["messages"] = kept
    return repairs


def _repair_assistant(msg: dict, recalled: dict[str, Reasoning], repairs: list[str]) -> bool:
    """Fix one assistant message in place; False when it is empty and must go."""
    content = msg.get("content")
    if isinstance(content, list):
        parts = [p for p in content if not (isinstance(p, dict) and p.get("type") == "text" and not p.get("text"))]
        if len(parts) != len(content):
            repairs.append("empty_text_dropped")
        content = parts or None
        msg["content"] = content
    calls = msg.get("tool_calls")
    if calls is not None and not calls:
        del msg["tool_calls"]
        calls = None
    if calls:
        if content in ("", None):
            # `content: ""` beside tool calls: "text content is empty" (docs/kimi.md section 2).
            if "content" in msg:
                del msg["content"]
        current = msg.get("reasoning_content")
        if not (isinstance(current, str) and current.strip()):
            alt = msg.get("reasoning")
            key, stored = recall_for([c.get("id", "") for c in calls if isinstance(c, dict)], recalled)
            if isinstance(alt, str) and alt.strip() and stored is None:
                text, kind = alt, "reasoning_from_reasoning_field"
            else:
                text, kind = restored_reasoning(stored, text_of(content))
            msg["reasoning_content"] = text
            repairs.append(kind)
        return True
    return content not in ("", None)
