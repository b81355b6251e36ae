"""The Kimi repair for an Anthropic-format upstream (`/v1/messages`)."""

from __future__ import annotations

from ..core.ids import is_proxy_signature, make_signature, turn_key_of
from ..core.reasoning import Reasoning
from .policy import policy_for, recall_for, repair_common, restored_reasoning


def turn_keys_anthropic(body: dict) -> set[str]:
    keys = set()
    for msg in body.get("messages") or ():
        if isinstance(msg, dict) and msg.get("role") == "assistant" and isinstance(msg.get("content"), list):
            for block in msg["content"]:
                if isinstance(block, dict) and block.get("type") == "tool_use":
                    key = turn_key_of(block.get("id"))
                    if key:
                        keys.add(key)
    return keys


def _budget(max_tokens) -> int:
    # Anthropic wants 1024 <= budget_tokens < max_tokens; reasoning and answer share max_tokens.
    if not isinstance(max_tokens, int) or max_tokens <= 1025:
        return 1024
    return max(1024, min(max_tokens - 1, 31999))


def _thinking_on(body: dict, repairs: list[str]) -> bool:
    policy = policy_for(str(body.get("model", "")))
    thinking = body.get("thinking")
    if not policy.has_thinking_field:
        if "thinking" in body:
            del body["thinking"]
            repairs.append("thinking_dropped")
        return True
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "disabled" and policy.can_disable_thinking:
        return False
    if thinking is None:
        return True  # on by default for Kimi thinking models
    if kind != "enabled" or not isinstance(thinking.get("budget_tokens"), int):
        # `adaptive` (Claude Code) is rejected by strict upstreams; `disabled` by k2.7-code.
        body["thinking"] = {"type": "enabled", "budget_tokens": _budget(body.get("max_tokens"))}
        repairs.append("thinking_enabled" if kind != "adaptive" else "thinking_adaptive_to_enabled")
    return True


def _block_text(block: dict) -> str:
    """Text of a block Kimi does not accept, so its meaning survives the rewrite."""
    kind = block.get("type")
    if kind == "tool_reference":
        return f"[tool reference: {block.get('tool_name') or block.get('name') or ''}]"
    return block.get("text") or ""


def _clean_blocks(blocks: list, repairs: list[str]) -> list:
    out = []
    for block in blocks:
        if not isinstance(block, dict):
            out.append(block)
            continue
        kind = block.get("type")
        if kind == "text" and not block.get("text"):
            repairs.append("empty_text_dropped")
            continue
        if kind == "tool_reference":
            out.append({"type": "text", "text": _block_text(block)})
            repairs.append("tool_reference_to_text")
            continue
        if kind == "tool_result" and isinstance(block.get("content"), list):
            block["content"] = _clean_blocks(block["content"], repairs)
        out.append(block)
    return out


def _system_text(msg: dict) -> str:
    content = msg.get("content")
    if isinstance(content, str):
        return content
    return "\n\n".join(b.get("text") or "" for b in content or () if isinstance(b, dict))


def _as_blocks(content) -> list:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return list(content or ())


def _merge_users(first: dict, second: dict) -> None:
    """Two user turns in a row become one; tool results stay first (docs/protocols.md section 1)."""
    blocks = _as_blocks(first.get("content")) + _as_blocks(second.get("content"))
    results = [b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"]
    others = [b for b in blocks if not (isinstance(b, dict) and b.get("type") == "tool_result")]
    first["content"] = results + others


def repair_anthropic(body: dict, recalled: dict[str, Reasoning]) -> list[str]:
    repairs: list[str] = []
    thinking = _thinking_on(body, repairs)
    repair_common(body, repairs)
    choice = body.get("tool_choice")
    if thinking and isinstance(choice, dict) and choice.get("type") in ("any", "tool"):
        body["tool_choice"] = {k: v for k, v in choice.items() if k == "disable_parallel_tool_use"} | {"type": "auto"}
        repairs.append("tool_choice_auto")

    out: list = []
    for msg in body.get("messages") or []:
        if not isinstance(msg, dict):
            out.append(msg)
            continue
        role = msg.get("role")
        if role == "system":
            # Claude Code sends system messages inside `messages`; Kimi's Anthropic endpoint
            # does not take that role, so the text rides in a user turn at the same place.
            text = _system_text(msg)
            msg = {"role": "user", "content": [{"type": "text", "text": f"<system-reminder>\n{text}\n</system-reminder>"}]}
            repairs.append("system_message_folded")
            role = "user"
        content = msg.get("content")
        if isinstance(content, list):
            msg["content"] = content = _clean_blocks(content, repairs)
        if role == "assistant":
            if not content:
                repairs.append("empty_assistant_dropped")
                continue
            if isinstance(content, list):
                _restore_thinking(msg, content, recalled, repairs)
        if role == "user" and out and isinstance(out[-1], dict) and out[-1].get("role") == "user":
            _merge_users(out[-1], msg)
            repairs.append("user_turns_merged")
            continue
        out.append(msg)
    body["messages"] = out
    return repairs


def _restore_thinking(msg: dict, content: list, recalled: dict[str, Reasoning], repairs: list[str]) -> None:
    tool_ids = [b.get("id", "") for b in content if isinstance(b, dict) and b.get("type") == "tool_use"]
    if not tool_ids:
        return
    key, stored = recall_for(tool_ids, recalled)
    first_tool = next(i for i, b in enumerate(content) if isinstance(b, dict) and b.get("type") == "tool_use")
    thinking = next((b for b in content[:first_tool] if isinstance(b, dict) and b.get("type") == "thinking"), None)
    if thinking is not None and (thinking.get("thinking") or "").strip():
        if stored is not None and stored.signature and is_proxy_signature(thinking.get("signature")):
            thinking["signature"] = stored.signature  # the upstream's own, where it issued one
        return
    own = "".join(b.get("text") or "" for b in content if isinstance(b, dict) and b.get("type") == "text")
    text, kind = restored_reasoning(stored, own)
    signature = (stored.signature if stored is not None else None) or make_signature(key)
    if thinking is not None:
        thinking["thinking"] = text
        thinking["signature"] = thinking.get("signature") or signature
    else:
        content.insert(0, {"type": "thinking", "thinking": text, "signature": signature})
    repairs.append(kind)
