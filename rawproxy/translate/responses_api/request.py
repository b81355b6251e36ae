"""Request bodies, OpenAI Responses -> Chat Completions.

A pure function over parsed JSON that never mutates its input. Malformed fields raise
`ClientError` naming the field. Hosted tools no Kimi upstream can run are left out and
reported, never refused: a Responses client (Codex) sends some of them by default.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from ...core.errors import ClientError
from ._common import NAMESPACE_JOIN, AnswerContext, Unseal

ROLES = ("user", "assistant", "system", "developer")
_TEXT_PARTS = ("input_text", "output_text", "text")

# History items of hosted or OpenAI-only tools, and OpenAI's opaque compaction: no Chat
# Completions form carries them, so they are left out and reported, like hosted tools.
NO_CHAT_FORM_ITEMS = frozenset({
    "web_search_call", "file_search_call", "computer_call", "computer_call_output",
    "code_interpreter_call", "image_generation_call", "local_shell_call", "local_shell_call_output",
    "shell_call", "shell_call_output", "apply_patch_call", "apply_patch_call_output",
    "mcp_list_tools", "mcp_approval_request", "mcp_approval_response", "mcp_call",
    "tool_search_call", "tool_search_output", "compaction", "compaction_summary",
    "compaction_trigger", "ghost_snapshot", "program", "program_output",
})

# Request fields a Response object repeats back (instructions left out: Codex's are large).
_ECHOED = ("temperature", "top_p", "max_output_tokens", "metadata", "reasoning", "text",
           "previous_response_id", "user", "prompt_cache_key", "truncation", "safety_identifier")


@dataclass(frozen=True, slots=True)
class TranslatedRequest:
    """A Responses request as the Chat Completions body to send, and what the caller needs."""

    chat: dict
    context: AnswerContext  # pass to the answer / stream translators
    dropped_tools: tuple[str, ...] = ()  # hosted tool types left out (header and debug log)
    skipped_items: tuple[str, ...] = ()  # input item types with no chat form, left out
    previous_response_id: str | None = None  # the caller splices that conversation in at input_start
    input_start: int = 0  # index in chat["messages"] of the first message made from `input`
    store: bool = True  # the Responses API stores unless told not to
    stream: bool = False

    @property
    def custom_tools(self) -> frozenset[str]:
        return self.context.custom_tools


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ClientError(f"{where} must be a string")
    return value


def _flat(name: str, namespace: Any) -> str:
    return f"{namespace}{NAMESPACE_JOIN}{name}" if isinstance(namespace, str) and namespace else name


# ---------------------------------------------------------------- tools


@dataclass
class _Tools:
    chat: list[dict] = field(default_factory=list)
    client_names: dict[str, str] = field(default_factory=dict)  # flat name -> the client's name
    custom: set[str] = field(default_factory=set)
    namespaced: dict[str, tuple[str, str]] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)

    def drop(self, kind: str) -> None:
        if kind not in self.dropped:
            self.dropped.append(kind)

    def add_all(self, tools: Any, where: str) -> None:
        if tools is None:
            return
        if not isinstance(tools, list):
            raise ClientError(f"{where} must be a list of tools")
        for i, tool in enumerate(tools):
            self.add(tool, f"{where}[{i}]")

    def add(self, tool: Any, where: str, namespace: tuple[str, str] | None = None) -> None:
        if not isinstance(tool, dict):
            raise ClientError(f"{where} must be an object")
        kind = _string(tool.get("type"), f"{where}.type")
        if kind == "function":
            spec = tool["function"] if isinstance(tool.get("function"), dict) else tool  # Chat-shaped too
            self._function(spec, where, namespace, custom=False)
        elif kind == "custom":
            self._function(tool, where, namespace, custom=True)
        elif kind == "namespace" and namespace is None:
            ns = _string(tool.get("name"), f"{where}.name")
            note = tool["description"] if isinstance(tool.get("description"), str) else ""
            children = tool.get("tools")
            if not isinstance(children, list):
                raise ClientError(f"{where}.tools must be a list of tools")
            for j, child in enumerate(children):
                self.add(child, f"{where}.tools[{j}]", (ns, note))
        else:
            self.drop(kind)  # hosted: web_search, file_search, code_interpreter, mcp, shell, ...

    def _function(self, spec: dict, where: str, namespace: tuple[str, str] | None, custom: bool) -> None:
        name = _string(spec.get("name"), f"{where}.name")
        if not name:
            raise ClientError(f"{where}.name must not be empty")
        description = spec.get("description")
        if description is not None and not isinstance(description, str):
            raise ClientError(f"{where}.description must be a string")
        description = description or ""
        parameters: dict
        if custom:
            parameters = {
                "type": "object",
                "properties": {"input": {"type": "string", "description": "The tool's input, as free text."}},
                "required": ["input"],
            }
            fmt = spec.get("format")
            if isinstance(fmt, dict) and fmt.get("type") == "grammar" and isinstance(fmt.get("definition"), str):
                # the model has no grammar-constrained decoding here: tell it the syntax instead
                syntax = fmt.get("syntax", "")
                description += f"\n\nThe input must follow this {syntax} grammar:\n{fmt['definition']}"
        else:
            given = spec.get("parameters")
            if given is not None and not isinstance(given, dict):
                raise ClientError(f"{where}.parameters must be an object")
            # a copy: the Kimi repair may edit the body it is given
            parameters = copy.deepcopy(given) if given is not None else {"type": "object", "properties": {}}
        flat = name
        if namespace is not None:
            ns, note = namespace
            flat = _flat(name, ns)
            self.namespaced[flat] = (ns, name)
            if note:
                description += f"\n\n({ns}: {note})"
        if flat in self.client_names:
            return  # a tool listed twice (request and additional_tools) is offered once
        self.client_names[flat] = name
        if custom:
            self.custom.add(flat)
        fn: dict[str, Any] = {"name": flat}
        if description.strip():
            fn["description"] = description.strip()
        fn["parameters"] = parameters
        if isinstance(spec.get("strict"), bool) and not custom:
            fn["strict"] = spec["strict"]
        self.chat.append({"type": "function", "function": fn})

    def keep_only(self, names: set[str]) -> None:
        """allowed_tools: the upstream sees only the allowed subset."""
        self.chat = [t for t in self.chat if t["function"]["name"] in names or self.client_names[t["function"]["name"]] in names]


def _tool_choice(choice: Any, tools: _Tools) -> str | dict | None:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if not isinstance(choice, dict):
        raise ClientError("tool_choice must be auto, none, required or an object")
    kind = choice.get("type")
    if kind in ("function", "custom"):
        name = _string(choice.get("name"), "tool_choice.name")
        return {"type": "function", "function": {"name": _flat(name, choice.get("namespace"))}}
    if kind == "allowed_tools":
        mode = choice.get("mode", "auto")
        if mode not in ("auto", "required"):
            raise ClientError("tool_choice.mode must be auto or required")
        allowed = choice.get("tools")
        if not isinstance(allowed, list):
            raise ClientError("tool_choice.tools must be a list")
        names = set()
        for i, entry in enumerate(allowed):
            if not isinstance(entry, dict):
                raise ClientError(f"tool_choice.tools[{i}] must be an object")
            if entry.get("type") in ("function", "custom") and isinstance(entry.get("name"), str):
                names.add(_flat(entry["name"], entry.get("namespace")))
        tools.keep_only(names)
        return mode
    if isinstance(kind, str):
        tools.drop(kind)  # forcing a hosted tool: nothing here can run it, so let the model choose
        return "auto"
    raise ClientError("tool_choice.type must be a string")


# ---------------------------------------------------------------- content


def _image(part: dict, where: str) -> dict:
    url = part.get("image_url")
    if isinstance(url, dict):  # Chat-shaped {"url": ...}
        url = url.get("url")
    if not isinstance(url, str) or not url:
        raise ClientError(f"{where}.image_url must be a string (file_id images are not supported)")
    return {"type": "image_url", "image_url": {"url": url}}


def _file(part: dict, where: str) -> dict:
    data = part.get("file_data")
    if not isinstance(data, str) or not data:
        raise ClientError(f"{where}.file_data must be a string (file_id and file_url are not supported)")
    if not data.startswith("data:"):  # the Responses API takes bare base64 here
        data = "data:application/pdf;base64," + data
    name = part.get("filename") if isinstance(part.get("filename"), str) else "document.pdf"
    return {"type": "file", "file": {"file_data": data, "filename": name}}


def _parts(content: Any, where: str, allowed: tuple[str, ...]) -> list[dict]:
    """Responses content -> Chat parts, empty text dropped. `allowed`: the part kinds the
    role takes besides text."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise ClientError(f"{where} must be a string or a list of content parts")
    parts: list[dict] = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise ClientError(f"{at} must be an object")
        kind = part.get("type")
        if kind in _TEXT_PARTS or (kind == "refusal" and kind in allowed):
            key = "refusal" if kind == "refusal" else "text"
            text = _string(part.get(key), f"{at}.{key}")
            if text:
                parts.append({"type": "text", "text": text})
        elif kind == "input_image" and kind in allowed:
            parts.append(_image(part, at))
        elif kind == "input_file" and kind in allowed:
            parts.append(_file(part, at))
        else:
            raise ClientError(f"{at}.type {kind!r} is not supported here")
    return parts


def _joined(parts: list[dict]) -> str:
    return "\n\n".join(p["text"] for p in parts)


def _tool_output(output: Any, where: str) -> tuple[str, list[dict]]:
    """A call's output -> (tool message text, image/file parts to follow as a user turn):
    Chat tool messages take text only."""
    parts = _parts(output, where, ("input_image", "input_file"))
    texts, attached = [], []
    for part in parts:
        if part["type"] == "text":
            texts.append(part["text"])
        else:
            texts.append(f"[{'image' if part['type'] == 'image_url' else 'file'} attached below]")
            attached.append(part)
    return "\n\n".join(texts), attached


# ---------------------------------------------------------------- input items


class _History:
    """Builds Chat messages from input items. Consecutive assistant-side items (message,
    function/custom calls, reasoning) merge into one assistant message, as the answer
    translators split one assistant message into them."""

    def __init__(self, unseal: Unseal | None) -> None:
        self.unseal = unseal
        self.messages: list[dict] = []
        self.skipped: list[str] = []
        self._texts: list[str] = []
        self._calls: list[dict] = []
        self._thoughts: list[str] = []  # reasoning of the open assistant message
        self._pending_thoughts: list[str] = []  # reasoning waiting for its message or call
        self._attached: list[dict] = []  # tool-output images, after the run of tool messages

    # -- assistant side

    def _assistant_part(self) -> None:
        self._thoughts += self._pending_thoughts
        self._pending_thoughts = []

    def close_assistant(self) -> None:
        if self._texts or self._calls:
            msg: dict[str, Any] = {"role": "assistant"}
            if self._texts or not self._calls:  # Kimi 400s on empty content beside tool calls
                msg["content"] = "\n\n".join(self._texts)
            if self._thoughts:
                msg["reasoning_content"] = "\n\n".join(self._thoughts)
            if self._calls:
                msg["tool_calls"] = self._calls
            self.messages.append(msg)
        self._texts, self._calls, self._thoughts = [], [], []

    def _boundary(self) -> None:
        """A turn of another role: reasoning no message or call took is left behind."""
        self.close_assistant()
        self._pending_thoughts = []

    def _flush_attached(self) -> None:
        if self._attached:
            self.messages.append({"role": "user", "content": self._attached})
            self._attached = []

    # -- items

    def add(self, item: Any, where: str) -> None:
        if not isinstance(item, dict):
            raise ClientError(f"{where} must be an object")
        kind = item.get("type")
        if kind is None and "role" in item:
            kind = "message"  # EasyInputMessage omits the type
        if kind in ("function_call_output", "custom_tool_call_output"):
            self._output(item, where)
            return
        self._flush_attached()
        if kind == "message":
            self._message(item, where)
        elif kind in ("function_call", "custom_tool_call"):
            self._call(item, where, kind)
        elif kind == "reasoning":
            text = self._reasoning(item, where)
            if text:
                self._pending_thoughts.append(text)
        elif kind in NO_CHAT_FORM_ITEMS:
            self.skipped.append(kind)
        else:
            raise ClientError(f"{where}.type {kind!r} is not supported")

    def finish(self) -> None:
        self.close_assistant()
        self._flush_attached()

    def _message(self, item: dict, where: str) -> None:
        role = item.get("role")
        if role not in ROLES:
            raise ClientError(f"{where}.role must be one of {', '.join(ROLES)}")
        content = item.get("content")
        at = f"{where}.content"
        if role == "assistant":
            text = _joined(_parts(content, at, ("refusal",)))
            if text:  # an empty assistant message carries nothing (and takes no reasoning)
                self._assistant_part()
                self._texts.append(text)
            return
        self._boundary()
        if role in ("system", "developer"):
            self.messages.append({"role": "system", "content": _joined(_parts(content, at, ()))})
            return
        parts = _parts(content, at, ("input_image", "input_file"))
        if not parts:
            self.messages.append({"role": "user", "content": ""})
        elif len(parts) == 1 and parts[0]["type"] == "text":
            self.messages.append({"role": "user", "content": parts[0]["text"]})
        else:
            self.messages.append({"role": "user", "content": parts})

    def _call(self, item: dict, where: str, kind: str) -> None:
        call_id = _string(item.get("call_id"), f"{where}.call_id")
        name = _flat(_string(item.get("name"), f"{where}.name"), item.get("namespace"))
        if kind == "function_call":
            arguments = _string(item.get("arguments"), f"{where}.arguments") or "{}"
        else:  # a custom tool call replays as a call of the one-string-parameter function
            arguments = json.dumps({"input": _string(item.get("input"), f"{where}.input")}, ensure_ascii=False)
        self._assistant_part()
        self._calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})

    def _output(self, item: dict, where: str) -> None:
        self._boundary()
        call_id = _string(item.get("call_id"), f"{where}.call_id")
        if "output" not in item:
            raise ClientError(f"{where}.output is required")
        text, attached = _tool_output(item["output"], f"{where}.output")
        self.messages.append({"role": "tool", "tool_call_id": call_id, "content": text})
        self._attached += attached

    def _reasoning(self, item: dict, where: str) -> str:
        """The reasoning text an item carries: the proxy's own sealed text first, else
        its reasoning_text content, else its summary. A token that is not ours is ignored."""
        sealed = item.get("encrypted_content")
        if sealed is not None:
            _string(sealed, f"{where}.encrypted_content")
            text = self.unseal(sealed) if self.unseal is not None and sealed else None
            if isinstance(text, str) and text:
                return text
        for key, part_kind in (("content", "reasoning_text"), ("summary", "summary_text")):
            parts = item.get(key)
            if parts is None:
                continue
            if not isinstance(parts, list):
                raise ClientError(f"{where}.{key} must be a list")
            texts = []
            for j, part in enumerate(parts):
                if not isinstance(part, dict):
                    raise ClientError(f"{where}.{key}[{j}] must be an object")
                if part.get("type") in (part_kind, "text"):
                    texts.append(_string(part.get("text"), f"{where}.{key}[{j}].text"))
            text = "\n\n".join(t for t in texts if t)
            if text:
                return text
        return ""


# ---------------------------------------------------------------- the request


def _number(body: dict, key: str) -> Any:
    value = body.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ClientError(f"{key} must be a number")
    return value


def _response_format(text: Any) -> dict | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise ClientError("text must be an object")
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise ClientError("text.format must be an object")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise ClientError("text.format.schema must be an object")
        name = fmt["name"] if isinstance(fmt.get("name"), str) else "output"
        spec: dict[str, Any] = {"name": name, "schema": copy.deepcopy(schema)}
        if isinstance(fmt.get("strict"), bool):
            spec["strict"] = fmt["strict"]
        if isinstance(fmt.get("description"), str):
            spec["description"] = fmt["description"]
        return {"type": "json_schema", "json_schema": spec}
    raise ClientError(f"text.format.type {kind!r} is not supported")


def _summary_wanted(reasoning: dict) -> bool:
    """Reasoning is shown as a summary unless the client said not to: Codex leaves
    `reasoning` out for models it does not know, and Kimi's reasoning is worth showing."""
    for key in ("summary", "generate_summary"):
        if key in reasoning:
            return reasoning[key] not in (None, "none")
    return True


def responses_to_chat_request(body: dict, unseal: Unseal | None = None, *, raw_reasoning: bool = False) -> TranslatedRequest:
    """A Responses request body -> the Chat Completions body and what the answer needs.

    `unseal` turns a reasoning item's encrypted_content back into the reasoning text (None:
    not one the proxy made). `raw_reasoning`: answers also carry reasoning as reasoning_text
    content, not only as a summary.
    """
    if not isinstance(body, dict):
        raise ClientError("the request body must be a JSON object")
    for key, problem in (("background", "background responses are not supported"),
                         ("conversation", "conversation objects are not supported; send the history in input"),
                         ("prompt", "prompt templates are not supported")):
        if body.get(key):
            raise ClientError(problem)

    tools = _Tools()
    tools.add_all(body.get("tools"), "tools")
    history = _History(unseal)
    instructions = body.get("instructions")
    if instructions is not None and _string(instructions, "instructions"):
        # a previous response's instructions do not carry over: only this request's lead
        history.messages.append({"role": "system", "content": instructions})
    input_start = len(history.messages)
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    elif items is None:
        items = []  # previous_response_id alone: the caller supplies the conversation
    elif not isinstance(items, list):
        raise ClientError("input must be a string or a list of items")
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if isinstance(item, dict) and item.get("type") == "additional_tools":
            tools.add_all(item.get("tools"), f"{where}.tools")
            continue
        history.add(item, where)
    history.finish()

    out: dict[str, Any] = {"model": body.get("model"), "messages": history.messages}
    choice = _tool_choice(body.get("tool_choice"), tools)
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise ClientError("parallel_tool_calls must be a boolean")
    if tools.chat:  # Chat rejects tool_choice and parallel_tool_calls without tools
        out["tools"] = tools.chat
        if choice is not None:
            out["tool_choice"] = choice
        if parallel is not None:
            out["parallel_tool_calls"] = parallel
    limit = body.get("max_output_tokens")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise ClientError("max_output_tokens must be a positive integer")
        out["max_tokens"] = limit
    for key in ("temperature", "top_p"):  # the Kimi repair drops them where the model forbids them
        if _number(body, key) is not None:
            out[key] = body[key]
    reasoning = body.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, dict):
        raise ClientError("reasoning must be an object")
    reasoning = reasoning or {}
    effort = reasoning.get("effort")
    if effort is not None:
        out["reasoning_effort"] = _string(effort, "reasoning.effort")
    fmt = _response_format(body.get("text"))
    if fmt:
        out["response_format"] = fmt
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        out["user"] = user
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise ClientError("stream must be a boolean")
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}

    include = body.get("include")
    if include is not None and (not isinstance(include, list) or not all(isinstance(x, str) for x in include)):
        raise ClientError("include must be a list of strings")
    previous = body.get("previous_response_id")
    if previous is not None:
        _string(previous, "previous_response_id")
    store = body.get("store")
    if store is not None and not isinstance(store, bool):
        raise ClientError("store must be a boolean")

    echo: dict[str, Any] = {
        "tools": body.get("tools") if isinstance(body.get("tools"), list) else [],
        "tool_choice": body.get("tool_choice") if body.get("tool_choice") is not None else "auto",
        "parallel_tool_calls": parallel if parallel is not None else True,
    }
    echo.update({key: body[key] for key in _ECHOED if body.get(key) is not None})
    context = AnswerContext(
        custom_tools=frozenset(tools.custom),
        namespaced=dict(tools.namespaced),
        summary=_summary_wanted(reasoning),
        raw_reasoning=raw_reasoning,
        encrypted_reasoning="reasoning.encrypted_content" in (include or ()),
        echo=echo,
    )
    return TranslatedRequest(
        chat=out,
        context=context,
        dropped_tools=tuple(tools.dropped),
        skipped_items=tuple(history.skipped),
        previous_response_id=previous,
        input_start=input_start,
        store=store if store is not None else True,
        stream=bool(stream),
    )
