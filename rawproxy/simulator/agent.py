"""A scripted, deterministic model: enough behaviour to drive real clients' tool loops.

Script: while tools are offered and fewer than two tool-call turns happened since the
last user message with real text, call tools (the first two in parallel on the first
turn when allowed, else the first one); then answer with text that quotes every tool
result received, so tests can check results made the round trip. Each answer carries
reasoning unique per turn (a nonce), and Kimi-style tool-call ids `functions.<Name>:<k>`
that repeat every turn, as Kimi's do (docs/kimi.md section 3).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

TOOL_TURNS = 2
_QUOTE_LIMIT = 400


@dataclass(slots=True)
class Conversation:
    """What the agent needs from a request, the same for both dialects."""

    tools: list[tuple[str, dict]]  # (name, JSON schema of the arguments)
    thinking: bool
    parallel: bool = True
    tool_choice: str | None = None  # None/"auto", "none", or the name of a forced tool
    tool_turns: int = 0  # assistant tool-call turns since the last real user text
    tool_results: list[str] = field(default_factory=list)
    user_text: str = ""
    fingerprint: str = ""


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict


@dataclass(slots=True)
class Answer:
    reasoning: str | None
    text: str
    tool_calls: list[ToolCall]

    @property
    def finish(self) -> str:  # OpenAI finish_reason; render maps it to Anthropic's
        return "tool_calls" if self.tool_calls else "stop"


def fingerprint(messages: Any) -> str:
    raw = json.dumps(messages, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.blake2s(raw.encode(), digest_size=8).hexdigest()


# ---------------------------------------------------------------- reading requests


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, dict):
                parts.append(f"[{part.get('type')}]")
        return "\n".join(parts)
    return ""


def conversation_openai(body: dict, thinking: bool) -> Conversation:
    tools = [
        (t["function"]["name"], t["function"].get("parameters") or {})
        for t in body.get("tools") or []
    ]
    choice = body.get("tool_choice")
    forced = choice["function"].get("name") if isinstance(choice, dict) else choice
    conv = Conversation(tools, thinking, body.get("parallel_tool_calls") is not False, forced)
    for message in reversed(body["messages"]):
        role = message.get("role")
        if role == "user" and _text_of(message.get("content")).strip():
            conv.user_text = _text_of(message.get("content"))
            break
        if role == "assistant" and message.get("tool_calls"):
            conv.tool_turns += 1
        elif role == "tool":
            conv.tool_results.insert(0, _text_of(message.get("content")))
    conv.fingerprint = fingerprint(body["messages"])
    return conv


def conversation_anthropic(body: dict, thinking: bool) -> Conversation:
    tools = [
        (t["name"], t.get("input_schema") or {})
        for t in body.get("tools") or []
        if not t.get("defer_loading")  # deferred tools are not loaded: not callable yet
    ]
    choice = body.get("tool_choice") or {}
    kind = choice.get("type")
    forced = choice.get("name") if kind == "tool" else ("none" if kind == "none" else None)
    conv = Conversation(tools, thinking, not choice.get("disable_parallel_tool_use"), forced)
    for message in reversed(body["messages"]):
        content = message.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        if message.get("role") == "assistant":
            conv.tool_turns += any(b.get("type") == "tool_use" for b in blocks)
            continue
        results = [b for b in blocks if b.get("type") == "tool_result"]
        if not results and _text_of(blocks).strip():
            # A real user turn; text sent next to tool results (Claude Code's reminders)
            # does not end the tool loop, or the script would never stop calling tools.
            conv.user_text = _text_of(blocks)
            break
        for block in reversed(results):
            prefix = "error: " if block.get("is_error") else ""
            conv.tool_results.insert(0, prefix + _text_of(block.get("content")))
    conv.fingerprint = fingerprint(body["messages"])
    return conv


# ---------------------------------------------------------------- arguments from schemas


def sample_value(name: str, schema: Any, agent: "Agent") -> Any:
    if not isinstance(schema, dict):
        return "sim"
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return sample_value(name, schema[key][0], agent)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None and "properties" in schema:
        kind = "object"
    if kind in ("integer", "number"):
        low = schema.get("minimum", 1)
        return max(1, int(low) if isinstance(low, (int, float)) else 1)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind == "array":
        count = schema.get("minItems", 0) if isinstance(schema.get("minItems"), int) else 0
        return [sample_value(name, schema.get("items"), agent) for _ in range(count)]
    if kind == "object":
        return sample_arguments(schema, agent)
    if name in ("command", "cmd"):  # Claude Code's Bash, Codex's exec_command
        agent.commands += 1
        return f"echo step-{agent.commands}"  # harmless when a real client runs it
    return "sim"


def sample_arguments(schema: Any, agent: "Agent") -> dict:
    if not isinstance(schema, dict):
        return {}
    props = schema.get("properties")
    props = props if isinstance(props, dict) else {}
    required = schema.get("required")
    required = required if isinstance(required, list) else []
    # A schema naming a non-string as required is the client's mistake: no argument for it.
    return {name: sample_value(name, props.get(name), agent) for name in required if isinstance(name, str)}


# ---------------------------------------------------------------- the agent


_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>", re.S)


class Agent:
    def __init__(self) -> None:
        self.turns: list[dict] = []
        self.requests = 0
        self.commands = 0

    def reset(self) -> None:
        self.turns.clear()
        self.requests = self.commands = 0

    def answer(self, conv: Conversation) -> Answer:
        self.requests += 1
        n = self.requests
        nonce = hashlib.blake2s(f"{conv.fingerprint}:{n}".encode(), digest_size=3).hexdigest()
        chosen = self._choose_tools(conv)
        calls = [
            ToolCall(f"functions.{name}:{k}", name, sample_arguments(schema, self))
            for k, (name, schema) in enumerate(chosen)
        ]
        if calls:
            plan = "I need tools: I will call " + " and ".join(c.name for c in calls) + "."
            # Text before the first tool turn only: converters must cope with both shapes.
            text = f"Calling {calls[0].name} now." if conv.tool_turns == 0 else ""
        elif conv.tool_results:
            plan = f"I have {len(conv.tool_results)} tool result(s) and can answer now."
            quoted = " | ".join(r[:_QUOTE_LIMIT] for r in conv.tool_results)
            text = f"Sim answer {n} [{nonce}]. Tool results: {quoted}"
        else:
            plan = "No tools needed, I will answer directly."
            text = f"Sim answer {n} [{nonce}]. You said: {conv.user_text.strip()[-_QUOTE_LIMIT:]}"
        reasoning = f"Sim reasoning {n} [{nonce}]: {plan} Thinking it through step by step." if conv.thinking else None
        answer = Answer(reasoning, text, calls)
        self.turns.append({
            "request": n,
            "fingerprint": conv.fingerprint,
            "reasoning": reasoning,
            "text": text,
            "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in calls],
        })
        return answer

    def _choose_tools(self, conv: Conversation) -> list[tuple[str, dict]]:
        if not conv.tools or conv.tool_choice == "none" or conv.tool_turns >= TOOL_TURNS:
            return []
        if conv.tool_choice not in (None, "auto", "required"):
            return [t for t in conv.tools if t[0] == conv.tool_choice][:1]
        # Tools the user names ("use Bash to ...") come first, so a real client such as
        # Claude Code, which offers a dozen tools, runs the one the task asks for.
        # Claude Code's <system-reminder> blocks name many tools; only the user's words count.
        asked = _REMINDER.sub("", conv.user_text or "")
        named = [t for t in conv.tools if re.search(rf"\b{re.escape(t[0])}\b", asked)]
        pool = named or conv.tools
        if conv.tool_turns == 0 and conv.parallel and len(pool) >= 2:
            return pool[:2]
        return pool[:1]
