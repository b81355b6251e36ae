"""Sealed reasoning: a token a stateless client carries for the proxy, and nobody else.

The Responses API lets a client that keeps no server-side state (Codex sends
`store: false` and asks for `reasoning.encrypted_content`) carry the model's reasoning
from one turn to the next as an opaque string. The proxy puts the real reasoning in that
string, so the next turn restores it even on another replica with an empty store.

A token is the reasoning text plus an HMAC-SHA256 over it, keyed by the proxy's secret
and the tenant (the credential that produced it): a client cannot forge one, and a token
made for one tenant does not open for another. It is authenticated, not encrypted: it
only ever goes back to the tenant whose own model output it holds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

_VERSION = "rps1"
_MAC_BYTES = 20


class ReasoningSeal:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the sealing secret must be at least 16 bytes")
        self._secret = secret

    def _key(self, tenant: str) -> bytes:
        return hmac.new(self._secret, b"tenant:" + tenant.encode(), hashlib.sha256).digest()

    def seal(self, tenant: str, text: str, turn_key: str | None = None) -> str:
        payload = json.dumps({"t": text, "k": turn_key}, ensure_ascii=False, separators=(",", ":")).encode()
        mac = hmac.new(self._key(tenant), payload, hashlib.sha256).digest()[:_MAC_BYTES]
        return ".".join((_VERSION, _b64(payload), _b64(mac)))

    def open(self, tenant: str, token: object) -> str | None:
        """The reasoning text a token holds, or None when it is not one this proxy (with
        this secret) made for this tenant."""
        if not isinstance(token, str) or token.count(".") != 2:
            return None
        version, payload_text, mac_text = token.split(".")
        if version != _VERSION:
            return None
        try:
            payload, mac = _unb64(payload_text), _unb64(mac_text)
        except ValueError:
            return None
        expected = hmac.new(self._key(tenant), payload, hashlib.sha256).digest()[:_MAC_BYTES]
        if not hmac.compare_digest(mac, expected):
            return None
        try:
            doc = json.loads(payload)
        except ValueError:
            return None
        text = doc.get("t") if isinstance(doc, dict) else None
        return text if isinstance(text, str) else None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError("not base64") from exc
