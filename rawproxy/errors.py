"""One error shape per dialect (protocols.md sections 1 and 2)."""

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


class ClientError(Exception):
    """A request the proxy will not send on; status and message reach the client."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def anthropic_error_type(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


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


def upstream_error_message(body: bytes) -> str:
    """The message of an upstream error body in any shape relays use, else its text."""
    try:
        doc = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return text[:2000] or "upstream returned an empty error body"
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
    return json.dumps(doc)[:2000]


def redact(text: str, *secrets: str) -> str:
    """`text` with every secret replaced: some upstreams quote the key they were sent
    in their error message, and that message is relayed to the client."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "<redacted>")
    return text
