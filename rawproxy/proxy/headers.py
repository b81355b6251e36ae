"""Which headers cross the proxy, each way.

Toward the upstream: the content headers the proxy sets, the key it holds (or the
client's, when clients do not authenticate to the proxy itself), and the few headers a
Kimi upstream looks at (docs/kimi.md section 2: the coding endpoint checks the
User-Agent). Everything else, credentials included, stays here. Back to the client: the
upstream's request id, rate-limit hints and Retry-After.
"""

from __future__ import annotations

from ..core.dialects import ANTHROPIC, UpstreamFormat
from ..server.http import Request
from ..upstream.client import UpstreamResponse
from .requests import client_key

_FORWARDED = {b"user-agent", b"anthropic-version", b"anthropic-beta", b"x-session-id", b"session_id", b"x-request-id"}
_FORWARDED_PREFIXES = (b"x-claude-code-",)
_ANSWER_HEADERS = {b"request-id", b"x-request-id", b"retry-after", b"x-ratelimit-remaining-requests"}


def upstream_headers(request: Request, upstream_format: UpstreamFormat, api_key: str, stream: bool,
                     forward_client_key: bool = True) -> list[tuple[bytes, bytes]]:
    """`forward_client_key` is False when clients authenticate to the proxy itself: their
    key is then an access key and never leaves the proxy."""
    headers = [
        (b"content-type", b"application/json"),
        (b"accept", b"text/event-stream" if stream else b"application/json"),
        (b"accept-encoding", b"identity"),  # the tap reads the bytes: no compression
    ]
    key = api_key.encode() if api_key else (client_key(request) if forward_client_key else None)
    if key:
        if upstream_format == ANTHROPIC:
            headers.append((b"x-api-key", key))
        else:
            headers.append((b"authorization", b"Bearer " + key))
    has_version = False
    for name, value in request.headers:
        if name in _FORWARDED or name.startswith(_FORWARDED_PREFIXES):
            headers.append((name, value))
            has_version = has_version or name == b"anthropic-version"
    if upstream_format == ANTHROPIC and not has_version:
        headers.append((b"anthropic-version", b"2023-06-01"))
    return headers


def answer_headers(up: UpstreamResponse) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in up.headers if k in _ANSWER_HEADERS]
