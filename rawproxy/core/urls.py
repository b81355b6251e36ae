"""URLs as the proxy shows them: never with credentials, loopback recognised once."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def without_userinfo(url: str) -> str:
    """`url` with any `user:password@` removed; everything else kept as written."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def host_port(url: str) -> str:
    """The `host[:port]` of `url` as a Host header carries it (userinfo dropped)."""
    return urlsplit(url).netloc.rpartition("@")[2]


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost, or "" (every interface)
