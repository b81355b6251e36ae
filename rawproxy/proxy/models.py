"""GET /v1/models: the upstream's model list, in the asking client's dialect."""

from __future__ import annotations

import json

from ..core.dialects import ANTHROPIC
from ..core.errors import UpstreamError, upstream_error_message
from ..core.settings import Settings
from ..server.http import Request, Response, json_response
from ..upstream.client import Upstream
from .headers import upstream_headers
from .outcome import Outcome
from .requests import dialect_of_request, error_response


class ModelList:
    def __init__(self, settings: Settings, upstream: Upstream) -> None:
        self.settings = settings
        self.upstream = upstream
        base = settings.upstream
        self.url = f"{base}/v1/models" if settings.upstream_format == ANTHROPIC else f"{base}/models"

    async def __call__(self, request: Request, outcome: Outcome) -> Response:
        settings = self.settings
        dialect = dialect_of_request(request)
        headers = upstream_headers(request, settings.upstream_format, settings.api_key, False,
                                   not settings.access_keys)
        up = await self.upstream.send("GET", self.url, headers, b"")
        outcome.upstream_status = up.status
        raw = await up.read()
        if up.status >= 400:
            return error_response(dialect, up.status, upstream_error_message(raw, (settings.api_key,)))
        try:
            ids = [m["id"] for m in json.loads(raw).get("data", []) if isinstance(m, dict) and "id" in m]
        except (ValueError, RecursionError, AttributeError, TypeError):  # RecursionError: nested too deep
            raise UpstreamError(f"upstream {up.where} answered a model list that is not JSON") from None
        if dialect == ANTHROPIC:
            data = [{"type": "model", "id": i, "display_name": i, "created_at": "2025-01-01T00:00:00Z"} for i in ids]
            doc = {"data": data, "has_more": False, "first_id": ids[0] if ids else None,
                   "last_id": ids[-1] if ids else None}
        else:
            doc = {"object": "list",
                   "data": [{"id": i, "object": "model", "created": 0, "owned_by": "moonshot"} for i in ids]}
        return json_response(200, json.dumps(doc).encode())
