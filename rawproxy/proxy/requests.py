"""Reading a client request: which dialect it speaks, its key, whether its body is valid;
and answering it with an error in that dialect."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from ..core import client_json
from ..core.dialects import ANTHROPIC, OPENAI, Dialect, error_body
from ..core.errors import ClientError
from ..server.http import Request, RequestHead, Response, json_response


def dialect_of_path(path: str) -> Dialect:
    return ANTHROPIC if "/messages" in path else OPENAI


def dialect_of_request(request: RequestHead) -> Dialect:
    """For routes both dialects share (GET /v1/models): Anthropic clients send their headers."""
    if request.header(b"anthropic-version") is not None or request.header(b"x-api-key") is not None:
        return ANTHROPIC
    return OPENAI if request.path != "/v1/messages" else ANTHROPIC


def error_response(dialect: Dialect, status: int, message: str,
                   extra: list[tuple[bytes, bytes]] | None = None) -> Response:
    return json_response(status, error_body(dialect, status, message), extra)


def parse_body(request: Request) -> dict:
    ctype = (request.header(b"content-type") or b"application/json").split(b";")[0].strip().lower()
    if ctype not in (b"application/json", b"text/json") and not ctype.endswith(b"+json"):
        raise ClientError(f"content-type must be application/json, not {ctype.decode('latin-1')!r}", 415)
    if not request.body:
        raise ClientError("request body is empty; expected a JSON object")
    try:
        # Refuses NaN/Infinity, absurd nesting and lone surrogates, naming where they are.
        body = client_json.loads(request.body, "request body")
    except UnicodeDecodeError:
        raise ClientError("request body is not UTF-8 JSON") from None
    except ValueError as exc:
        raise ClientError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ClientError(f"request body must be a JSON object, not a JSON {type(body).__name__}")
    return body


def _require_messages(body: dict, roles: tuple[str, ...]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ClientError("`model` is required and must be a non-empty string")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ClientError("`messages` is required and must be a non-empty list")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise ClientError(f"messages[{i}] must be an object")
        if msg.get("role") not in roles:
            raise ClientError(f"messages[{i}].role must be one of {', '.join(roles)}, not {msg.get('role')!r}")


# ---------------------------------------------------------------- field shapes
#
# Every field the proxy reads (the translators, the Kimi repairs, the pipeline) is checked
# here once, so they can trust its type; a wrong one is a 400 naming the field. A check
# takes (value, where) and raises; null counts as absent, as most readers treat it, except
# for the fields wrapped in _not_null. Fields the proxy never reads pass through
# unchecked, for the upstream to judge.

Check = Callable[[Any, str], None]
_NULL_REFUSED: set[Check] = set()


def _not_null(check: Check) -> Check:
    """`check`, for a field whose readers take a null for a value (`.get(key, default)`
    hands it over): there a null is refused, not read as absent."""
    def refusing_null(value: Any, where: str) -> None:
        check(value, where)
    _NULL_REFUSED.add(refusing_null)
    return refusing_null


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _expected(where: str, what: str, value: Any) -> NoReturn:
    raise ClientError(f"{where} must be {what}, not {_kind(value)}")


def _fields(obj: dict, where: str, spec: Mapping[str, Check]) -> None:
    for name, check in spec.items():
        value = obj.get(name)
        if value is not None or (check in _NULL_REFUSED and name in obj):
            check(value, f"{where}.{name}" if where else name)


def _string(value: Any, where: str) -> None:
    if not isinstance(value, str):
        _expected(where, "a string", value)


def _boolean(value: Any, where: str) -> None:
    if not isinstance(value, bool):
        _expected(where, "a boolean", value)


def _integer(value: Any, where: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        _expected(where, "an integer", value)


def _number(value: Any, where: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        _expected(where, "a number", value)


def _object(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        _expected(where, "an object", value)


def _list_of(value: Any, where: str, item_type: type, what: str) -> list:
    if not isinstance(value, list):
        _expected(where, what, value)
    for i, item in enumerate(value):
        if not isinstance(item, item_type):
            raise ClientError(f"{where} must be {what}; {where}[{i}] is {_kind(item)}")
    return value


def _strings(value: Any, where: str) -> None:
    _list_of(value, where, str, "a list of strings")


def _string_or_strings(value: Any, where: str) -> None:
    if not isinstance(value, str):
        _list_of(value, where, str, "a string or a list of strings")


def _object_with(spec: Mapping[str, Check]) -> Check:
    def check(value: Any, where: str) -> None:
        _object(value, where)
        _fields(value, where, spec)
    return check


def _objects_with(spec: Mapping[str, Check]) -> Check:
    def check(value: Any, where: str) -> None:
        for i, item in enumerate(_list_of(value, where, dict, "a list of objects")):
            _fields(item, f"{where}[{i}]", spec)
    return check


def _string_or_object_with(spec: Mapping[str, Check]) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, str):
            if not isinstance(value, dict):
                _expected(where, "a string or an object", value)
            _fields(value, where, spec)
    return check


def _typed_items(value: Any, where: str, specs: Mapping[str, Mapping[str, Check]], strings_allowed: bool) -> None:
    """A list of `{"type": ...}` objects (content blocks, content parts), each checked by
    the spec of its type; types the proxy does not read pass unchecked. Bare strings are
    taken where the translators take them (Anthropic content lists)."""
    what = "a list of content blocks (objects)" if strings_allowed else "a list of content parts (objects)"
    if not isinstance(value, list):
        _expected(where, what, value)
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if isinstance(item, str) and strings_allowed:
            continue
        if not isinstance(item, dict):
            raise ClientError(f"{where} must be {what}; {at} is {_kind(item)}")
        kind = item.get("type")
        if not isinstance(kind, str):
            _expected(f"{at}.type", "a string", kind)
        spec = specs.get(kind)
        if spec is not None:
            _fields(item, at, spec)


# Anthropic Messages.

_REQUIRED_STRING = _not_null(_string)
_SOURCE = _object_with({"type": _string, "media_type": _REQUIRED_STRING, "data": _REQUIRED_STRING,
                        "url": _REQUIRED_STRING})


def _anthropic_blocks(value: Any, where: str) -> None:
    _typed_items(value, where, _ANTHROPIC_BLOCKS, True)


def _text_or_anthropic_blocks(value: Any, where: str) -> None:
    if not isinstance(value, str):
        _anthropic_blocks(value, where)


_ANTHROPIC_BLOCKS: dict[str, dict[str, Check]] = {
    "text": {"text": _string},
    "image": {"source": _SOURCE},
    "document": {"source": _SOURCE, "title": _string},
    "thinking": {"thinking": _string, "signature": _string},
    "redacted_thinking": {"data": _string},
    "tool_use": {"id": _REQUIRED_STRING, "name": _REQUIRED_STRING, "input": _object},
    "tool_result": {"tool_use_id": _REQUIRED_STRING, "content": _text_or_anthropic_blocks, "is_error": _boolean},
    "tool_reference": {"tool_name": _string},
}
_ANTHROPIC_FIELDS: dict[str, Check] = {
    "max_tokens": _integer,
    "system": _text_or_anthropic_blocks,
    "temperature": _number,
    "top_p": _number,
    "top_k": _integer,
    "stop_sequences": _strings,
    "metadata": _object_with({"user_id": _string}),
    "tools": _objects_with({"name": _REQUIRED_STRING, "type": _string, "description": _string,
                            "input_schema": _object, "strict": _boolean}),
    "tool_choice": _object_with({"type": _string, "name": _REQUIRED_STRING, "disable_parallel_tool_use": _boolean}),
    "thinking": _object_with({"type": _string, "budget_tokens": _integer}),
    "output_config": _object_with({"effort": _string, "format": _object_with({"type": _string, "schema": _object})}),
}


# OpenAI Chat Completions.

def _openai_content(value: Any, where: str) -> None:
    if not isinstance(value, str):
        _typed_items(value, where, _OPENAI_PARTS, False)


_OPENAI_PARTS: dict[str, dict[str, Check]] = {
    "text": {"text": _string},
    "input_text": {"text": _string},
    "output_text": {"text": _string},
    "refusal": {"refusal": _string},
    "image_url": {"image_url": _string_or_object_with({"url": _REQUIRED_STRING, "detail": _string})},
    "file": {"file": _object_with({"file_data": _string, "filename": _string, "file_id": _string})},
}
_OPENAI_MESSAGE: dict[str, Check] = {
    "content": _openai_content,
    "name": _string,
    "tool_call_id": _REQUIRED_STRING,
    "reasoning_content": _string,
    "tool_calls": _objects_with({"id": _REQUIRED_STRING, "type": _string, "function": _object_with(
        # arguments: a JSON string, or (tolerated) the object itself
        {"name": _REQUIRED_STRING, "arguments": _string_or_object_with({})})}),
}
_OPENAI_FIELDS: dict[str, Check] = {
    "stream_options": _object_with({"include_usage": _boolean}),
    "max_tokens": _integer,
    "max_completion_tokens": _integer,
    "temperature": _number,
    "top_p": _number,
    "presence_penalty": _number,
    "frequency_penalty": _number,
    "n": _integer,
    "stop": _string_or_strings,
    "user": _string,
    "tools": _objects_with({"type": _string, "function": _object_with(
        {"name": _REQUIRED_STRING, "description": _string, "parameters": _object, "strict": _boolean})}),
    "tool_choice": _string_or_object_with({"type": _string, "function": _object_with({"name": _REQUIRED_STRING})}),
    "parallel_tool_calls": _boolean,
    "reasoning_effort": _string,
    "thinking": _object_with({"type": _string, "budget_tokens": _integer}),
    "response_format": _object_with({"type": _string}),
    "logprobs": _boolean,
    "top_logprobs": _integer,
    "modalities": _strings,
}


def validate_anthropic(body: dict, count_tokens: bool = False) -> None:
    _require_messages(body, ("user", "assistant", "system"))
    for i, msg in enumerate(body["messages"]):
        content = msg.get("content")
        if isinstance(content, list):
            _anthropic_blocks(content, f"messages[{i}].content")
        elif not isinstance(content, str):
            raise ClientError(f"messages[{i}].content must be a string or a list of content blocks")
    if not count_tokens:
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise ClientError("`max_tokens` is required and must be a positive integer")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise ClientError("`stream` must be a boolean")
    _fields(body, "", _ANTHROPIC_FIELDS)


def validate_openai(body: dict) -> None:
    _require_messages(body, ("system", "developer", "user", "assistant", "tool", "function"))
    if "stream" in body and not isinstance(body["stream"], bool):
        raise ClientError("`stream` must be a boolean")
    for i, msg in enumerate(body["messages"]):
        _fields(msg, f"messages[{i}]", _OPENAI_MESSAGE)
    _fields(body, "", _OPENAI_FIELDS)


def validate_responses(body: dict) -> None:
    """The Responses API body: the fields read before translation. Every item and tool is
    checked, field by field, by its translation (translate/responses_api)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ClientError("`model` is required and must be a non-empty string")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise ClientError("`stream` must be a boolean")
    if body.get("input") is None and body.get("previous_response_id") is None:
        raise ClientError("`input` is required (a string or a list of items)")


def client_key(request: RequestHead) -> bytes | None:
    key = request.header(b"x-api-key")
    if key:
        return key
    auth = request.header(b"authorization")
    if auth and auth[:7].lower() == b"bearer ":
        return auth[7:].strip() or None
    return None
