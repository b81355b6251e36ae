"""Errors that carry an HTTP status, and one error shape per dialect (docs/protocols.md
sections 1 and 2): the status-to-type tables and the mapping of error types between the
dialects live here and nowhere else."""

from __future__ import annotations

import json

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    501: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


# Anthropic's own error types; anything else an upstream names is mapped onto them.
ANTHROPIC_ERROR_TYPES = frozenset(set(_ANTHROPIC_TYPES.values()) | {"api_error", "invalid_request_error"})
# OpenAI-style and Kimi error types -> Anthropic's.
_TO_ANTHROPIC_TYPE = {
    "server_error": "api_error",
    "internal_error": "api_error",
    "rate_limit_exceeded": "rate_limit_error",
    "rate_limit_reached_error": "rate_limit_error",
    "engine_overloaded_error": "overloaded_error",
    "exceeded_current_quota_error": "billing_error",
    "insufficient_quota": "billing_error",
}
# Anthropic's server-side types -> OpenAI's one; the others keep their names.
_TO_OPENAI_TYPE = dict.fromkeys(("api_error", "overloaded_error", "timeout_error"), "server_error")


class StatusError(Exception):
    """An error whose status and message reach the client, in its dialect."""

    default_status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = self.default_status if status is None else status


class ClientError(StatusError):
    """A request the proxy will not send on (400 unless said otherwise)."""

    default_status = 400


class UpstreamError(StatusError):
    """The upstream could not be reached, stopped answering or answered nonsense (502
    unless said otherwise); the message names the upstream, never a key."""

    default_status = 502


def anthropic_error_type(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def anthropic_type_for(kind: object, code: object = None) -> str:
    """The Anthropic error type for an error another dialect (or a relay) named `kind`,
    with an HTTP-like `code` as the fallback."""
    if isinstance(kind, str) and kind in ANTHROPIC_ERROR_TYPES:
        return kind
    mapped = _TO_ANTHROPIC_TYPE.get(kind) if isinstance(kind, str) else None
    if mapped:
        return mapped
    return anthropic_error_type(code) if isinstance(code, int) else "api_error"


def openai_type_for(kind: str) -> str:
    """The OpenAI error type for an Anthropic one."""
    return _TO_OPENAI_TYPE.get(kind, kind)


def openai_error_type(status: int) -> str:
    return _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def anthropic_error(status: int, message: str, type_: str | None = None) -> bytes:
    return json.dumps(
        {"type": "error", "error": {"type": type_ or anthropic_error_type(status), "message": message}}
    ).encode()


def openai_error(status: int, message: str, type_: str | None = None, code: str | None = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type_ or openai_error_type(status), "param": None, "code": code}}
    ).encode()


# The longest upstream error message relayed to a client, in characters.
MESSAGE_LIMIT = 2000


def upstream_error_message(body: bytes, secrets: tuple[str, ...] = ()) -> str:
    """The message of an upstream error body in any shape relays use, else its text;
    `secrets` redacted, then cut to MESSAGE_LIMIT (in that order: a cut made first could
    leave the start of a secret that redaction no longer recognises)."""
    return redact(_error_text(body), *secrets)[:MESSAGE_LIMIT]


def _error_text(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        text = body.decode("utf-8", "replace").strip()
        return text or "upstream returned an empty error body"
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
        if isinstance(doc.get("message"), str):  # SiliconFlow: {"code": 20015, "message": ...}
            return doc["message"]
        if isinstance(doc.get("detail"), str):
            return doc["detail"]
    return json.dumps(doc)


def redact(text: str, *secrets: str) -> str:
    """`text` with every secret replaced: some upstreams quote the key they were sent
    in their error message, and that message is relayed to the client."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "<redacted>")
    return text


def redact_bytes(data: bytes, secrets: tuple[str, ...]) -> bytes:
    """`data` (JSON or SSE bytes on their way to a client) with every secret replaced.
    The replacement holds no quote or backslash, so JSON stays JSON."""
    for secret in secrets:
        raw = secret.encode()
        if raw and raw in data:
            data = data.replace(raw, b"<redacted>")
    return data
