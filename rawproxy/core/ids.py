"""Tool-call ids and thinking signatures the proxy issues.

Kimi's ids (`functions.Bash:0`) repeat every turn and are not valid Anthropic ids
(`^[a-zA-Z0-9_-]+$`, docs/protocols.md section 1). The proxy hands clients ids of its own,
`<prefix>_<turn>_<k>`, where `<turn>` keys the upstream answer they came from: the
reasoning of that answer is remembered under it, and found again from any id of that
turn that the client sends back.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets

TURN_KEY_LEN = 20
_PROXY_ID = re.compile(rf"^(?:toolu|call)_([a-z0-9]{{{TURN_KEY_LEN}}})_(\d+)$")
_INVALID = re.compile(r"[^a-zA-Z0-9_-]")
SIGNATURE_PREFIX = "rawproxy-sig-"


def new_turn_key() -> str:
    # 100 random bits in lower-case base32 (a-z, 2-7): one urandom call per answer.
    return base64.b32encode(os.urandom(13)).decode("ascii").lower()[:TURN_KEY_LEN]


def tool_call_id(turn_key: str, index: int, prefix: str) -> str:
    return f"{prefix}_{turn_key}_{index}"


def turn_key_of(tool_call_id: object) -> str | None:
    m = _PROXY_ID.match(tool_call_id) if isinstance(tool_call_id, str) else None
    return m.group(1) if m else None


def id_chars(raw: str) -> str:
    """`raw` with every character an Anthropic id may not hold removed."""
    return _INVALID.sub("", raw)


def sanitize_tool_id(raw: str) -> str:
    """A valid Anthropic id for any string, deterministic so the same input maps the same."""
    if raw and not _INVALID.search(raw):
        return raw
    digest = hashlib.blake2s(raw.encode(), digest_size=6).hexdigest()
    return f"toolu_{_INVALID.sub('_', raw)[:40]}_{digest}"


def make_signature(turn_key: str | None = None) -> str:
    """A signature for thinking the proxy hands out; Kimi does not validate signatures."""
    return SIGNATURE_PREFIX + (turn_key or secrets.token_hex(10))


def is_proxy_signature(sig: object) -> bool:
    return isinstance(sig, str) and sig.startswith(SIGNATURE_PREFIX)
