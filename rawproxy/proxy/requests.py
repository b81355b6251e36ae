"""Reading a client request: which dialect it speaks, its key, whether its body is valid;
and answering it with an error in that dialect."""

from __future__ import annotations

import json

from ..core.dialects import ANTHROPIC, OPENAI, Dialect, error_body
from ..core.errors import ClientError
from ..server.http import Request, Response, json_response


def dialect_of_path(path: str) -> Dialect:
    return ANTHROPIC if "/messages" in path else OPENAI


def dialect_of_request(request: Request) -> Dialect:
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
        body = json.loads(request.body)
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


def validate_anthropic(body: dict, count_tokens: bool = False) -> None:
    _require_messages(body, ("user", "assistant", "system"))
    for i, msg in enumerate(body["messages"]):
        if not isinstance(msg.get("content"), (str, list)):
            raise ClientError(f"messages[{i}].content must be a string or a list of content blocks")
    if not count_tokens:
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise ClientError("`max_tokens` is required and must be a positive integer")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise ClientError("`stream` must be a boolean")


def validate_openai(body: dict) -> None:
    _require_messages(body, ("system", "developer", "user", "assistant", "tool", "function"))
    if "stream" in body and not isinstance(body["stream"], bool):
        raise ClientError("`stream` must be a boolean")


def client_key(request: Request) -> bytes | None:
    key = request.header(b"x-api-key")
    if key:
        return key
    auth = request.header(b"authorization")
    if auth and auth[:7].lower() == b"bearer ":
        return auth[7:].strip() or None
    return None
